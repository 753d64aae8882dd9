"""Growing and shrinking a bundle: atomically (SIGKILL at any point leaves the old bundle or the
new one), duplicates and unknown ids refused, an added image found first."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.bundle import Bundle, InputError, add_references, decode_image, remove_references
from retrieval.bundle.layout import REFERENCES, load_arrays
from retrieval.bundle.manifest import MANIFEST
from retrieval.data.images import IMAGE, scan_test

ROOT = Path(__file__).resolve().parents[2]


def new_images(root: Path, n: int) -> list[Image.Image]:
    """Query photos of the demo set (not references), as new references."""
    return [decode_image((root / p).read_bytes(), p) for p in scan_test(root, "query")[IMAGE][:n]]


def test_added_images_find_themselves_first_and_removing_them_restores_the_bundle(bundle_copy, bundle_source):
    before = Bundle.open(bundle_copy)
    images = new_images(bundle_source[2], 3)
    add_references(bundle_copy, ["new-a", "new-b", "new-c"], images)
    after = Bundle.open(bundle_copy)
    assert after.ids == before.ids + ["new-a", "new-b", "new-c"]
    assert [row[0][0] for row in after.search(images, 3)] == ["new-a", "new-b", "new-c"]
    assert after.thumbnail("new-b")[:2] == b"\xff\xd8"  # a JPEG
    # an added reference's stored embedding is the bundle's embedding of its image
    raw = load_arrays(bundle_copy / REFERENCES)["raw_fold1"]
    np.testing.assert_allclose(raw[-3:], after.embed(images)[1], atol=1e-6)
    remove_references(bundle_copy, ["new-a", "new-b", "new-c"])
    restored = Bundle.open(bundle_copy)
    assert restored.ids == before.ids and restored.thumbnail("new-a") is None
    queries = new_images(bundle_source[2], 5)
    got, want = restored.search(queries, 4), before.search(queries, 4)
    assert [[r for r, _ in row] for row in got] == [[r for r, _ in row] for row in want]
    np.testing.assert_allclose([[s for _, s in row] for row in got], [[s for _, s in row] for row in want], atol=1e-6)


def test_removing_a_reference_takes_it_out_of_every_ranking(bundle_copy, bundle_source):
    bundle = Bundle.open(bundle_copy)
    gone = bundle.ids[2]
    remove_references(bundle_copy, [gone])
    smaller = Bundle.open(bundle_copy)
    rows = smaller.search(new_images(bundle_source[2], 4), 1000)
    assert gone not in smaller.ids and all(gone not in [r for r, _ in row] for row in rows)
    assert all(len(row) == len(bundle.ids) - 1 for row in rows)


def test_duplicate_and_unknown_ids_are_refused_and_change_nothing(bundle_copy, bundle_source):
    manifest = (bundle_copy / MANIFEST).read_bytes()
    existing = Bundle.open(bundle_copy).ids[0]
    images = new_images(bundle_source[2], 2)
    with pytest.raises(InputError, match=f"holds the reference id '{existing}' already"):
        add_references(bundle_copy, ["fresh", existing], images)
    with pytest.raises(InputError, match="the id 'twice' is given twice"):
        add_references(bundle_copy, ["twice", "twice"], images)
    with pytest.raises(InputError, match="2 ids for 1 images"):
        add_references(bundle_copy, ["a", "b"], images[:1])
    with pytest.raises(InputError, match="no space, comma, quote or slash"):
        add_references(bundle_copy, ["a b"], images[:1])
    with pytest.raises(InputError, match="holds no reference 'ghost'"):
        remove_references(bundle_copy, ["ghost"])
    with pytest.raises(InputError, match="would leave nothing to search"):
        remove_references(bundle_copy, Bundle.open(bundle_copy).ids)
    assert (bundle_copy / MANIFEST).read_bytes() == manifest
    assert [p.name for p in bundle_copy.parent.iterdir()] == ["bundle"]


# Each point patches a step of add_references in a subprocess to SIGKILL it there: mid-write of
# the new folder, before its manifest, just before the swap, and after it (old folder not yet removed).
KILL_POINTS = {
    "mid-write": "retrieval.bundle.layout.save_arrays",
    "before-manifest": "retrieval.bundle.layout.write_manifest",
    "before-swap": "retrieval.bundle.swap._exchange",
    "after-swap": "retrieval.bundle.swap.shutil.rmtree",
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_mid_add_leaves_the_old_bundle_or_the_new_one(bundle_copy, bundle_source, point):
    old_ids = Bundle.open(bundle_copy).ids
    query = bundle_source[2] / scan_test(bundle_source[2], "query")[IMAGE].iloc[0]
    module, name = KILL_POINTS[point].rsplit(".", 1)
    code = textwrap.dedent(f"""
        import importlib, os, signal
        from retrieval.bundle import add_references, decode_image
        mod = importlib.import_module({module!r}) if {module!r} != "retrieval.bundle.swap.shutil" else \\
            importlib.import_module("retrieval.bundle.swap").shutil
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        setattr(mod, {name!r}, die)
        add_references({str(bundle_copy)!r}, ["killed"], [decode_image(open({str(query)!r}, "rb").read(), "q")])
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == -9, out.stdout + out.stderr
    ids = Bundle.open(bundle_copy).ids  # the manifest checks: a whole bundle
    assert ids == (old_ids + ["killed"] if point == "after-swap" else old_ids)
    # the next writer clears what the killed one left beside the bundle
    add_references(bundle_copy, ["after"], new_images(bundle_source[2], 1))
    assert Bundle.open(bundle_copy).ids[-1] == "after"
    assert [p.name for p in bundle_copy.parent.iterdir()] == ["bundle"]
    assert json.loads((bundle_copy / MANIFEST).read_text())["files"]


def test_a_second_writer_at_the_same_time_is_refused(bundle_copy, bundle_source):
    from retrieval.bundle.swap import locked

    with locked(bundle_copy):
        with pytest.raises(InputError, match="another process is rewriting this bundle"):
            add_references(bundle_copy, ["x"], new_images(bundle_source[2], 1))
    add_references(bundle_copy, ["x"], new_images(bundle_source[2], 1))  # free again
    assert Bundle.open(bundle_copy).ids[-1] == "x"
