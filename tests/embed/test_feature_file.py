"""Feature files: the format version and the fingerprints of what made them, checked when read."""
import json

import numpy as np
import pytest

from retrieval.embed.feature_file import (FORMAT_VERSION, Features, check_made_by, check_same_model,
                                          features_fingerprint, load_feature_meta, load_features, save_features)
from retrieval.io import InputError

MADE_BY = {"fold": 0, "model_fingerprint": "m" * 64, "image_size": 48, "scales": [1.0], "flip_tta": True,
           "data_listing": "d" * 64}


def saved(path, meta=None, ids=("a", "b")):
    save_features(path, Features(list(ids), np.eye(len(ids), 3), meta=dict(MADE_BY if meta is None else meta)))
    return load_features(path)


def test_round_trip_adds_the_format_version_and_a_fingerprint_of_what_made_it(tmp_path):
    f = saved(tmp_path / "q.npz", {**MADE_BY, "empty_queries": ["a"]})
    assert f.meta["format_version"] == FORMAT_VERSION and f.meta["empty_queries"] == ["a"]
    # the per-file entries are left out: the query and reference files of one run share one fingerprint
    r = saved(tmp_path / "r.npz", ids=("c",))
    assert f.meta["fingerprint"] == r.meta["fingerprint"] == features_fingerprint(MADE_BY)
    assert load_feature_meta(tmp_path / "q.npz") == f.meta
    check_same_model(f, r, "q.npz", "r.npz")  # nothing raised
    check_made_by(r, "r.npz", "m" * 64, "model.pt")


@pytest.mark.parametrize("change", ["model_fingerprint", "image_size", "fold", "data_listing"])
def test_the_fingerprint_covers_the_model_the_settings_the_fold_and_the_data(change):
    assert features_fingerprint({**MADE_BY, change: "other"}) != features_fingerprint(MADE_BY)


def test_a_writer_without_the_models_fingerprint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs the model_fingerprint"):
        save_features(tmp_path / "f.npz", Features(["a"], np.ones((1, 2)), meta={"fold": 0}))
    assert not (tmp_path / "f.npz").exists()


@pytest.mark.parametrize("meta,needle", [
    (None, "written by an older version (no model fingerprint); re-run extract"),
    ({"fold": 0, "image_size": 48}, "written by an older version (no model fingerprint); re-run extract"),
    ({**MADE_BY, "format_version": 99, "fingerprint": "f"}, "feature file format 99, this version reads 2; re-run extract"),
])
@pytest.mark.parametrize("reader", [load_features, load_feature_meta])
def test_an_older_or_newer_file_is_refused_in_one_line(tmp_path, meta, needle, reader):
    arrays = {"ids": np.array(["a"]), "embeddings": np.ones((1, 2), np.float32)}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(InputError) as err:
        reader(tmp_path / "old.npz")
    assert str(err.value) == f"{tmp_path / 'old.npz'}: {needle}"


def test_files_of_another_model_or_other_settings_are_refused_naming_both(tmp_path):
    q = saved(tmp_path / "q.npz")
    other_model = saved(tmp_path / "r.npz", {**MADE_BY, "model_fingerprint": "n" * 64})
    with pytest.raises(InputError) as err:
        check_same_model(q, other_model, "q.npz", "r.npz")
    assert str(err.value) == (f"r.npz was made by another model than q.npz (fingerprint {other_model.meta['fingerprint'][:12]} "
                              f"vs {q.meta['fingerprint'][:12]}); re-run extract (dvc repro -s extract@0)")
    other_size = saved(tmp_path / "v.npz", {**MADE_BY, "image_size": 64})
    with pytest.raises(InputError, match="v.npz was made with other extract settings, fold or data than q.npz"):
        check_same_model(q.meta, other_size.meta, "q.npz", "v.npz")  # metas alone do too


def test_a_model_that_did_not_make_the_features_is_refused(tmp_path):
    r = saved(tmp_path / "r.npz")
    with pytest.raises(InputError) as err:
        check_made_by(r, "r.npz", "n" * 64, "fold0/model.pt")
    assert str(err.value) == ("fold0/model.pt is not the model that made r.npz (model fingerprint nnnnnnnnnnnn, "
                              "the file's mmmmmmmmmmmm): retrained since? re-run extract (dvc repro -s extract@0)")
