"""A bundle's files: arrays written byte for byte the same, refused when unreadable; the searched
references after DBA as a naive loop computes it; every file of the layout written, checked by
its manifest."""
import json
import zipfile

import faiss
import numpy as np
import pytest

from retrieval.bundle.layout import (REFERENCES, THUMBNAILS, Parts, index_file, load_arrays, model_file, save_arrays,
                                     searched_vectors, write_bundle)
from retrieval.bundle.manifest import MANIFEST, check_manifest
from retrieval.io import InputError

RERANK = {"steps": ["dba", "qe"], "dba": {"k": 2, "alpha": 3.0}, "qe": {"k": 2, "alpha": 3.0}, "index": {"kind": "exact"}}


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def naive_dba(x: np.ndarray, k: int, alpha: float) -> np.ndarray:
    out = []
    for i, row in enumerate(x):
        sims = x @ row
        sims[i] = -np.inf
        total = row.astype(np.float64).copy()
        for j in np.argsort(-sims, kind="stable")[:k]:
            total += max(sims[j], 0.0) ** alpha * x[j]
        out.append(total / np.linalg.norm(total))
    return np.array(out, np.float32)


def test_arrays_round_trip_and_equal_contents_give_equal_bytes(tmp_path):
    arrays = {"ids": np.array(["a", "b"]), "raw_fold0": unit_rows(2, 4)}
    save_arrays(tmp_path / "one.npz", arrays)
    save_arrays(tmp_path / "two.npz", {k: v.copy() for k, v in arrays.items()})
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    back = load_arrays(tmp_path / "one.npz")
    assert back.keys() == arrays.keys() and all(np.array_equal(back[k], arrays[k]) for k in arrays)


def test_an_unreadable_array_file_is_refused_naming_it(tmp_path):
    (tmp_path / REFERENCES).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"references\.npz: not a readable array file"):
        load_arrays(tmp_path / REFERENCES)


def test_searched_vectors_are_dba_as_a_naive_loop_or_the_raw_ones():
    raw = unit_rows(30, 8, seed=1)
    np.testing.assert_allclose(searched_vectors(raw, {"rerank": RERANK}), naive_dba(raw, 2, 3.0), atol=1e-5)
    plain = searched_vectors(raw.astype(np.float64), {"rerank": {**RERANK, "steps": ["qe"]}})
    assert plain.dtype == np.float32 and np.array_equal(plain, raw)


def test_write_bundle_writes_every_file_and_its_manifest_last(tmp_path):
    ids, raw = ["r0", "r1", "r2", "r3"], {0: unit_rows(4, 6, seed=2)}
    settings = {"folds": [{"fold": 0, "members": [{"onnx": model_file(0, 0)}]}], "rerank": RERANK}
    parts = Parts(settings, {"seed": 1}, {model_file(0, 0): b"onnx bytes"}, {}, ids, raw,
                  [(i, f"jpeg of {i}".encode()) for i in ids])
    write_bundle(tmp_path / "b", parts)
    b = tmp_path / "b"
    check_manifest(b)  # raises on any mismatch
    files = set(json.loads((b / MANIFEST).read_text())["files"])
    assert files == {"settings.json", "params.json", "models/fold0_member0.onnx", "whitening.npz", REFERENCES,
                     index_file(0), THUMBNAILS}
    refs = load_arrays(b / REFERENCES)
    assert refs["ids"].tolist() == ids and np.array_equal(refs["raw_fold0"], raw[0])
    np.testing.assert_allclose(refs["db_fold0"], naive_dba(raw[0], 2, 3.0), atol=1e-5)
    scores, idx = faiss.read_index(str(b / index_file(0))).search(refs["db_fold0"][:1], 4)
    np.testing.assert_allclose(scores[0], np.sort(refs["db_fold0"] @ refs["db_fold0"][0])[::-1], atol=1e-5)
    with zipfile.ZipFile(b / THUMBNAILS) as z:
        assert z.read("r2.jpg") == b"jpeg of r2"
    with pytest.raises(FileExistsError):  # only ever into a new folder
        write_bundle(b, parts)
