"""Tests mirror the package file for file: ``retrieval/a/b.py`` is tested in ``tests/a/test_b.py``
and ``retrieval/x.py`` in ``tests/test_x.py`` (a package's ``__init__.py``, a docstring alone, aside).

(Not named tests/test_layout.py: that is the mirror of retrieval/bundle/layout.py's
tests/bundle/test_layout.py, and two test files of one name cannot both be collected.)
"""
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mirror(module: Path) -> Path:
    """The test file of ``module`` (a path under retrieval/)."""
    rel = module.relative_to(ROOT / "retrieval")
    return ROOT / "tests" / rel.parent / f"test_{rel.name}"


def test_every_module_has_its_mirrored_test_file():
    modules = sorted(p for p in (ROOT / "retrieval").rglob("*.py") if p.name != "__init__.py")
    missing = [f"{m.relative_to(ROOT)} -> {mirror(m).relative_to(ROOT)}" for m in modules if not mirror(m).is_file()]
    assert not missing, "modules without their mirrored test file:\n" + "\n".join(missing)


def test_no_two_test_files_share_a_name():
    # tests/ has no __init__.py files: pytest imports each test file by its bare name, so a second
    # tests/x/test_knn.py beside tests/y/test_knn.py stops the whole run at collection
    by_name = defaultdict(list)
    for path in (ROOT / "tests").rglob("test_*.py"):
        by_name[path.name].append(path.relative_to(ROOT).as_posix())
    clashes = {name: sorted(paths) for name, paths in by_name.items() if len(paths) > 1}
    assert not clashes, f"test files of one name (rename one): {clashes}"


def test_mirror_paths():
    assert mirror(ROOT / "retrieval/rank/knn.py") == ROOT / "tests/rank/test_knn.py"
    assert mirror(ROOT / "retrieval/io.py") == ROOT / "tests/test_io.py"
