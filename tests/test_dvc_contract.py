"""dvc.yaml must name each stage's script and every library module the script imports.

Otherwise DVC would not rerun a stage whose code changed. The imports are read from the
source (AST), followed transitively through the ``retrieval`` library and the ``synthetic``
package (the demo set's generator).
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("retrieval", "synthetic")  # the local packages whose modules a stage's deps must list


def local_imports(path: Path) -> set[str]:
    """Files of the :data:`PACKAGES` that ``path`` imports, directly or not."""
    seen: set[str] = set()
    todo = [path]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                f = ROOT / (name.replace(".", "/") + ".py")
                if name.split(".")[0] in PACKAGES and f.is_file():
                    rel = f.relative_to(ROOT).as_posix()
                    if rel not in seen and not rel.endswith("/__init__.py"):
                        seen.add(rel)
                        todo.append(f)
    return seen


def stage_body(stage: dict) -> dict:
    return stage.get("do", stage)


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_runs_its_own_script(name):
    body = stage_body(DVC[name])
    assert re.search(rf"python -m stages\.{name}\b", body["cmd"]), body["cmd"]
    assert f"stages/{name}.py" in body["deps"]


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_library_imports(name):
    body = stage_body(DVC[name])
    needed = local_imports(ROOT / "stages" / f"{name}.py")
    missing = needed - set(body["deps"])
    assert not missing, f"stage {name}: add to deps: {sorted(missing)}"
    stale = {d for d in body["deps"] if d.split("/")[0] in PACKAGES} - needed
    assert not stale, f"stage {name}: deps it does not import: {sorted(stale)}"


def test_local_imports_follows_chains(tmp_path):
    # the checker itself: stages/train.py reaches retrieval/model/pretrained.py only through
    # retrieval/model/network.py
    assert "retrieval/model/pretrained.py" in local_imports(ROOT / "stages" / "train.py")
    assert "retrieval/model/pretrained.py" not in local_imports(ROOT / "stages" / "split.py")
    # and through the synthetic package: stages/demo.py reaches its products only through its dataset
    assert {"synthetic/dataset.py", "synthetic/photos.py", "synthetic/products.py"} <= \
        local_imports(ROOT / "stages" / "demo.py")


def test_package_inits_hold_no_code():
    # the checker does not list a subpackage's __init__.py: it must stay a docstring alone
    for init in [i for package in PACKAGES for i in (ROOT / package).rglob("__init__.py")]:
        body = ast.parse(init.read_text()).body
        code = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        if init.parent.name == "retrieval":
            code = [n for n in code if not (isinstance(n, ast.Assign) and n.targets[0].id == "__version__")]
        if init.parent.name == "bundle":  # the public API's re-exports (stages import the modules)
            code = [n for n in code if not (isinstance(n, ast.ImportFrom) and n.module.startswith("retrieval.")
                                            or isinstance(n, ast.Assign) and n.targets[0].id == "__all__")]
        assert not code, f"{init.relative_to(ROOT)}: code in a package's __init__.py"


def test_train_resume_fingerprint_covers_the_train_stage_code():
    # a resume state must not survive a change to any module the train stage runs (cli.py and
    # timing.py aside: they only wrap main and time it); the fingerprint's list is derived, this
    # checks it stays whole
    from retrieval.train.resume import code_files
    fingerprinted = {f.relative_to(ROOT).as_posix() for f in code_files()}
    train_deps = {d for d in stage_body(DVC["train"])["deps"] if d.startswith("retrieval/")}
    assert train_deps - {"retrieval/cli.py", "retrieval/timing.py"} <= fingerprinted
    assert fingerprinted <= train_deps


def test_every_stage_script_is_in_dvc_yaml():
    scripts = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    tools = {"compare", "score", "search", "serve"}  # command-line tools and the service, not pipeline stages
    assert scripts - tools == set(DVC)


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_docstring_names_every_flag_dvc_passes(name):
    # stage_args gives a pipeline stage's flags no help of their own: its docstring, which
    # --help prints whole, is where a user reads what each one reads or writes
    flags = set(re.findall(r"(--[a-z][a-z-]*)", stage_body(DVC[name])["cmd"]))
    doc = ast.get_docstring(ast.parse((ROOT / "stages" / f"{name}.py").read_text()))
    missing = sorted(f for f in flags if f"``{f}``" not in doc)
    assert not missing, f"stages/{name}.py's docstring does not name {missing}"


def test_git_tracks_no_run_results():
    # dvc.lock, the metrics and the training histories describe one run: committed, they went
    # stale (a lock naming library files long gone), and `dvc repro -s` in a fresh clone deleted
    # them. Untracked (and not ignored, so that `dvc exp run` still commits them to its
    # experiments), they are only ever those of the run in the workspace.
    import subprocess
    done = subprocess.run(["git", "ls-files", "dvc.lock", "outputs"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        pytest.skip("not a git checkout")
    assert [f for f in done.stdout.split() if not f.endswith(".gitignore")] == []
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "dvc.lock", "outputs/split/metrics.json"],
                             cwd=ROOT, capture_output=True)
    assert ignored.returncode == 1, "dvc exp run refuses a git-ignored dvc.lock, and drops ignored metrics"
