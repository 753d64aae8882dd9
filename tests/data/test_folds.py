"""Folds over classes and the query/reference division of validation classes."""
import pandas as pd
import pytest

from retrieval.data.folds import assign_folds, make_folds, query_count


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
