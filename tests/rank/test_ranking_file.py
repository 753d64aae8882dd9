"""Ranking files: they carry the fingerprint of the features ranked, checked when read."""
import json

import numpy as np
import pytest

from retrieval.io import InputError
from retrieval.rank.ranking_file import load_ranking, load_rankings, ranking_meta, save_ranking


def ranking(path, meta):
    save_ranking(path, ["q0", "q1"], ["r0", "r1", "r2"], np.array([[0.9, 0.5], [0.7, -np.inf]]),
                 np.array([[2, 0], [1, -1]]), meta)


def test_round_trip_keeps_the_arrays_and_the_features_fingerprint(tmp_path):
    ranking(tmp_path / "rk.npz", ranking_meta({"fingerprint": "f" * 64, "data_listing": "d" * 64, "fold": 0}))
    r = load_ranking(tmp_path / "rk.npz")
    assert r["meta"] == {"features": "f" * 64, "data_listing": "d" * 64, "format_version": 2}
    assert r["query_ids"].tolist() == ["q0", "q1"] and r["indices"].tolist() == [[2, 0], [1, -1]]
    assert r["scores"].dtype == np.float32


def test_a_writer_without_the_features_fingerprint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs the fingerprint of the features"):
        ranking(tmp_path / "rk.npz", {"data_listing": "d"})


@pytest.mark.parametrize("meta,needle", [
    (None, "written by an older version (no features fingerprint); re-run rerank"),
    ({"format_version": 3, "features": "f"}, "ranking file format 3, this version reads 2; re-run rerank"),
])
def test_an_older_or_newer_file_is_refused_in_one_line(tmp_path, meta, needle):
    arrays = {"query_ids": np.array(["q"]), "reference_ids": np.array(["r"]), "scores": np.ones((1, 1), np.float32),
              "indices": np.zeros((1, 1), np.int64)}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(InputError) as err:
        load_ranking(tmp_path / "old.npz")
    assert str(err.value) == f"{tmp_path / 'old.npz'}: {needle}"


def test_folds_ranking_features_of_other_data_are_refused(tmp_path):
    ranking(tmp_path / "rk0.npz", {"features": "fold0", "data_listing": "a" * 64})
    ranking(tmp_path / "rk1.npz", {"features": "fold1", "data_listing": "a" * 64})
    assert len(load_rankings([tmp_path / "rk0.npz", tmp_path / "rk1.npz"])) == 2  # other folds' features: fine
    ranking(tmp_path / "rk1.npz", {"features": "fold1", "data_listing": "b" * 64})
    with pytest.raises(InputError) as err:
        load_rankings([tmp_path / "rk0.npz", tmp_path / "rk1.npz"])
    assert str(err.value) == (f"{tmp_path / 'rk1.npz'} ranks features made from other data than {tmp_path / 'rk0.npz'} "
                              "(data listing bbbbbbbbbbbb vs aaaaaaaaaaaa); re-run extract and rerank of the older fold")
