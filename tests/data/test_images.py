"""retrieval/data/images.py: the layout's listings, test images decoded, the data unchanged while
a stage reads it. (Decoding every kind of image, and the refusals of bad files and names, are
tests/test_bad_input.py's.)"""
import hashlib
import io
import os

import pytest
from PIL import Image

from retrieval.data.images import (ID, IMAGE, LABEL, check_test_images, data_listing, data_unchanged, listing_digest,
                                   scan_test, scan_train, skipped_train_files)
from retrieval.io import InputError


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 90, 20)).save(buf, "JPEG")
    return buf.getvalue()


def test_an_apostrophe_in_a_test_id_is_fine_a_double_quote_is_not(tmp_path):
    # the CSV writer and reader treat only double quotes specially (retrieval/results/submission.py)
    (tmp_path / "test" / "query").mkdir(parents=True)
    (tmp_path / "test" / "query" / "l'œuf.jpg").write_bytes(jpeg())
    assert scan_test(tmp_path, "query")["id"].tolist() == ["l'œuf"]
    (tmp_path / "test" / "query" / 'say"cheese.jpg').write_bytes(jpeg())
    with pytest.raises(InputError, match="holds a space, comma or double quote, which a submission"):
        scan_test(tmp_path, "query")


def test_scan_train_golden(tmp_path):
    for name in ("b/2.jpg", "b/1.png", "a/1.jpg", "a/x.JPEG"):
        (tmp_path / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / name).write_bytes(jpeg())
    t = scan_train(tmp_path)
    assert t.values.tolist() == [["train/a/1.jpg", "a/1", "a"], ["train/a/x.JPEG", "a/x", "a"],
                                 ["train/b/1.png", "b/1", "b"], ["train/b/2.jpg", "b/2", "b"]]
    assert list(t.columns) == [IMAGE, ID, LABEL]


def test_skipped_train_files_are_those_scan_train_leaves(tmp_path):
    train = tmp_path / "train"
    (train / "a" / "deeper").mkdir(parents=True)
    for name in ("a/1.jpg", "a/notes.txt", "a/deeper/2.jpg", "loose.jpg", "a/.hidden.jpg", "a/Thumbs.db"):
        (train / name).write_bytes(jpeg())
    assert skipped_train_files(tmp_path) == sorted([train / "a/notes.txt", train / "a/deeper/2.jpg", train / "loose.jpg"])
    assert scan_train(tmp_path)[ID].tolist() == ["a/1"]


def test_listing_digest_is_of_names_and_sizes_not_times(tmp_path):
    (tmp_path / "train" / "c").mkdir(parents=True)
    (tmp_path / "train" / "c" / "1.jpg").write_bytes(b"abc")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "q.jpg").write_bytes(b"hello")
    listing = data_listing(tmp_path, ("train", "test"))
    assert {k: v[0] for k, v in listing.items()} == {"train/c/1.jpg": 3, "test/q.jpg": 5}
    want = hashlib.sha256(b"test/q.jpg\t5\ntrain/c/1.jpg\t3\n").hexdigest()  # sorted names, tab, size
    assert listing_digest(listing) == want
    os.utime(tmp_path / "test" / "q.jpg", ns=(1, 1))
    assert listing_digest(data_listing(tmp_path, ("train", "test"))) == want


def test_data_unchanged_yields_the_digest_and_refuses_a_change(tmp_path):
    (tmp_path / "train" / "c").mkdir(parents=True)
    (tmp_path / "train" / "c" / "1.jpg").write_bytes(b"abc")
    with data_unchanged(tmp_path, "split", ("train",)) as digest:
        pass
    assert digest == listing_digest(data_listing(tmp_path, ("train",)))
    with pytest.raises(InputError, match=r"train/c changed while split ran \(1 file added\); run again$"):
        with data_unchanged(tmp_path, "split", ("train",)):
            (tmp_path / "train" / "c" / "2.jpg").write_bytes(b"new")


def test_check_test_images_refuses_a_bad_reference_whatever_bad_query(tmp_path):
    for which, names in (("query", ("q1", "q2")), ("reference", ("r1",))):
        (tmp_path / "test" / which).mkdir(parents=True)
        for n in names:
            (tmp_path / "test" / which / f"{n}.jpg").write_bytes(jpeg())
    (tmp_path / "test" / "query" / "q2.jpg").write_bytes(b"broken")
    q, r = scan_test(tmp_path, "query"), scan_test(tmp_path, "reference")
    assert check_test_images(tmp_path, q, r, "empty") == ["q2"]
    with pytest.raises(InputError, match="^1 undecodable query image"):
        check_test_images(tmp_path, q, r, "error")
    (tmp_path / "test" / "reference" / "r1.jpg").write_bytes(b"broken")
    with pytest.raises(InputError, match="^1 undecodable reference image"):
        check_test_images(tmp_path, q, r, "empty")
