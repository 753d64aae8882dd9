"""A bundle that is partial, tampered with or of another format version is refused, naming the file."""
import json

import pytest

from retrieval.bundle import Bundle, InputError
from retrieval.bundle.manifest import FORMAT_VERSION, MANIFEST, check_manifest, sha256_file, write_manifest


def test_manifest_lists_every_file_with_its_sha256(built_bundle):
    manifest = json.loads((built_bundle / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    files = {p.relative_to(built_bundle).as_posix() for p in built_bundle.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(manifest["files"]) == files and "models/fold1_member0.onnx" in files
    assert all(manifest["files"][f] == sha256_file(built_bundle / f) for f in files)
    # hand-worked: the sha256 of the three bytes "abc"
    (built_bundle.parent / "abc").write_bytes(b"abc")
    assert sha256_file(built_bundle.parent / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_changed_byte_is_refused_naming_the_file(bundle_copy):
    path = bundle_copy / "references.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"references\.npz: its sha256 differs from the manifest's"):
        Bundle.open(bundle_copy)


@pytest.mark.parametrize("name", ["models/fold0_member0.onnx", "thumbnails.zip", "fold1.faiss"])
def test_a_missing_file_is_a_partial_bundle(bundle_copy, name):
    (bundle_copy / name).unlink()
    with pytest.raises(InputError, match=f"{name}: listed in the manifest but missing: a partial bundle"):
        Bundle.open(bundle_copy)


def test_a_missing_manifest_an_added_file_and_another_version_are_refused(bundle_copy, tmp_path):
    (bundle_copy / "extra.txt").write_text("x")
    with pytest.raises(InputError, match=r"extra\.txt: not in the manifest"):
        check_manifest(bundle_copy)
    (bundle_copy / "extra.txt").unlink()
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    (bundle_copy / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match=rf"manifest\.json: format version {FORMAT_VERSION + 1}, this code reads"):
        Bundle.open(bundle_copy)
    (bundle_copy / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match=r"manifest\.json: not a bundle manifest"):
        Bundle.open(bundle_copy)
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(InputError, match=r"manifest\.json: missing: a partial bundle"):
        Bundle.open(bundle_copy)
    with pytest.raises(InputError, match="no bundle folder"):
        Bundle.open(tmp_path / "nowhere")


def test_a_manifest_rewritten_after_a_change_opens(bundle_copy):
    # the check is of the manifest against the files: a rewritten manifest makes it whole again
    (bundle_copy / "params.json").write_text("{}\n")
    with pytest.raises(InputError):
        check_manifest(bundle_copy)
    write_manifest(bundle_copy)
    assert Bundle.open(bundle_copy).ids
