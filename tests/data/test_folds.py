"""Folds over classes and the query/reference division of validation classes."""
import pandas as pd
import pytest

from retrieval.data.folds import (COLUMNS, assign_folds, check_fold_validates, fold_parts, fold_summary, make_folds,
                                    query_count, read_folds, write_folds)
from retrieval.io import InputError


def table(sizes: dict[str, int]) -> pd.DataFrame:
    rows = [(f"train/{c}/{c}_{i}.jpg", f"{c}_{i}", c) for c, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["image", "id", "label"])


@pytest.mark.parametrize("n,frac,expected", [
    (1, 0.45, 0),   # a single image: reference only
    (2, 0.45, 1),   # at least one query and one reference
    (2, 0.99, 1),
    (3, 0.01, 1),
    (10, 0.45, 4),  # round(4.5) = 4 (round half to even)
    (11, 0.45, 5),  # round(4.95) = 5
    (20, 0.9, 18),
])
def test_query_count_golden(n, frac, expected):
    assert query_count(n, frac) == expected


def test_every_class_in_exactly_one_fold_and_balanced():
    sizes = {f"c{i}": 5 + (i * 7) % 13 for i in range(20)}
    folds = make_folds(table(sizes), 4, 0.45, seed=1)
    per_class = folds.groupby("label")["fold"].nunique()
    assert (per_class == 1).all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]
    load = folds.groupby("fold").size()
    assert load.max() - load.min() <= max(sizes.values())  # greedy balance bound
    assert len(folds) == sum(sizes.values()) and folds["id"].is_unique


def test_greedy_assignment_golden():
    # sizes 9, 5, 4, 3 into 2 folds: 9 -> f0, 5 -> f1, 4 -> f1 (5 < 9), 3 -> f0 (9 = 9, lowest fold)
    labels = pd.Series(["a"] * 9 + ["b"] * 5 + ["c"] * 4 + ["d"] * 3)
    assert assign_folds(labels, 2, seed=0) == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_roles_per_class():
    sizes = {"one": 1, "two": 2, "ten": 10}
    folds = make_folds(table(sizes), 2, 0.45, seed=0)
    q = folds[folds["role"] == "query"].groupby("label").size().reindex(list(sizes), fill_value=0)
    assert q.to_dict() == {"one": 0, "two": 1, "ten": 4}
    r = folds[folds["role"] == "reference"].groupby("label").size()
    assert r.to_dict() == {"one": 1, "two": 1, "ten": 6}


def test_deterministic_and_seed_dependent():
    t = table({f"c{i}": 6 for i in range(9)})
    a, b = make_folds(t, 3, 0.45, seed=5), make_folds(t, 3, 0.45, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = make_folds(t, 3, 0.45, seed=6)
    assert not a.equals(c)


def test_too_few_classes():
    with pytest.raises(ValueError, match="cannot fill"):
        make_folds(table({"a": 3, "b": 3}), 3, 0.45, seed=0)


def test_fold_summary_golden():
    folds = make_folds(table({"a": 4, "b": 2, "c": 1}), 2, 0.5, seed=0)
    # a (4 images) alone in one fold; b and c (3 images) in the other
    fa, fb = int(folds.loc[folds["label"] == "a", "fold"].iloc[0]), int(folds.loc[folds["label"] == "b", "fold"].iloc[0])
    assert fold_summary(folds) == {f"fold{fa}": {"classes": 1, "images": 4, "queries": 2, "references": 2},
                                   f"fold{fb}": {"classes": 2, "images": 3, "queries": 1, "references": 2}}


def test_folds_csv_round_trip_keeps_strings_verbatim(tmp_path):
    t = pd.DataFrame({"image": ["train/NA/001.jpg", "train/NA/002.jpg", "train/null/1.0.jpg", "train/null/x.jpg"],
                      "id": ["NA/001", "NA/002", "null/1.0", "null/x"], "label": ["NA", "NA", "null", "null"]})
    folds = make_folds(t, 2, 0.5, seed=0)
    write_folds(tmp_path / "folds.csv", folds)
    back = read_folds(tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(back, folds)
    assert list(back.columns) == list(COLUMNS) and set(back["label"]) == {"NA", "null"}
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_fold_parts_are_the_other_folds_and_this_one():
    folds = make_folds(table({f"c{i}": 3 for i in range(6)}), 3, 0.45, seed=2)
    for f in range(3):
        train, valid = fold_parts(folds, f)
        assert set(valid["fold"]) == {f} and f not in set(train["fold"])
        assert len(train) + len(valid) == len(folds)
        assert list(train.index) == list(range(len(train))) and list(valid.index) == list(range(len(valid)))
        assert not set(train["label"]) & set(valid["label"])


def test_a_fold_validating_on_one_class_is_refused():
    folds = make_folds(table({"a": 6, "b": 3, "c": 3}), 2, 0.45, seed=0)  # a alone in its fold
    alone = int(folds.loc[folds["label"] == "a", "fold"].iloc[0])
    with pytest.raises(InputError, match=rf"^fold {alone} validates on 1 class \(a\): every reference is relevant "
                                         r"to every query, so its mAP@1000 is 1.0 whatever the model; my hint$"):
        check_fold_validates(folds, alone, "my hint")
    check_fold_validates(folds, 1 - alone)  # two classes: fine
