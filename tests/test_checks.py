"""retrieval/checks.py: the data root, the folds a run can train and score, and shared test ids.

The check stage's one-line refusals through its ``main`` are tests/test_check.py's; these call
the checks directly, at their boundaries.
"""
import logging

import pandas as pd
import pytest

from retrieval.checks import check_root, checked_folds, shared_test_ids
from retrieval.config import parse_params
from retrieval.data.folds import make_folds
from retrieval.io import InputError


def train_table(sizes: dict[str, int]) -> pd.DataFrame:
    rows = [(f"train/{c}/{i}.jpg", f"{c}/{i}", c) for c, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["image", "id", "label"])


def params(**sections):
    return parse_params({"model": {"pretrained": "none"}, **sections})


def test_check_root(tmp_path):
    check_root(tmp_path)  # a directory: fine
    with pytest.raises(InputError, match=f"^data.root: {tmp_path / 'nope'}: no such directory$"):
        check_root(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=f"^data.root: {tmp_path / 'file'}: not a directory$"):
        check_root(tmp_path / "file")


def test_checked_folds_are_the_split():
    p = params(cv={"n_folds": 2, "folds": [0, 1]}, seed=3)
    train = train_table({f"c{i}": 3 for i in range(4)})
    pd.testing.assert_frame_equal(checked_folds(p, train), make_folds(train, 2, p.split.query_fraction, 3))


def test_more_folds_than_classes_is_refused_by_key():
    p = params(cv={"n_folds": 5, "folds": [0]})
    with pytest.raises(InputError, match="^cv.n_folds 5 exceeds the 4 training classes; lower cv.n_folds to at most 4$"):
        checked_folds(p, train_table({f"c{i}": 3 for i in range(4)}))


@pytest.mark.parametrize("batch_size,ok", [(12, True), (14, False)])
def test_pk_batches_need_classes_times_k_images(batch_size, ok):
    # 4 classes in 2 folds: each fold trains on 2 classes x m_per_class 6 = 12 images a batch at most
    p = params(cv={"n_folds": 2, "folds": [0, 1]},
               train={"sampler": "pk", "m_per_class": 2 if batch_size == 14 else 6, "batch_size": batch_size})
    train = train_table({f"c{i}": 3 for i in range(4)})
    if ok:
        checked_folds(p, train)
    else:
        with pytest.raises(InputError, match="fold 0 trains on 2 classes x train.m_per_class 2 = 4 images, "
                                             "fewer than a train.batch_size of 14"):
            checked_folds(p, train)


def test_a_fold_training_on_one_class_is_refused():
    p = params(cv={"n_folds": 2, "folds": [1]})
    with pytest.raises(InputError, match=r"^cv.n_folds 2: fold 1 would train on 1 class, and a model needs at least 2"):
        checked_folds(p, train_table({"a": 3, "b": 3}))


def test_a_fold_validating_on_one_class_is_refused_with_its_hint():
    # 6, 3, 3, 3 images into 3 folds: the largest class alone in fold 0, two classes in fold 1 (the
    # lowest of the two lightest folds takes the fourth), one in fold 2; each trains on 2 or 3
    p = params(cv={"n_folds": 3, "folds": [0, 1, 2]})
    with pytest.raises(InputError, match=r"^cv.n_folds 3: fold 0 validates on 1 class \(a\): .*; "
                                         r"lower cv.n_folds, or leave fold 0 out of cv.folds$"):
        checked_folds(p, train_table({"a": 6, "b": 3, "c": 3, "d": 3}))
    checked_folds(params(cv={"n_folds": 3, "folds": [1]}), train_table({"a": 6, "b": 3, "c": 3, "d": 3}))


def test_shared_test_ids_are_listed_sorted_and_logged(caplog):
    shared = [f"s{i:02d}" for i in range(20)]
    q = pd.DataFrame({"id": ["a", *shared[::-1]]})
    r = pd.DataFrame({"id": [*shared[::2], "b", *shared[1::2]]})
    with caplog.at_level(logging.WARNING, logger="retrieval.checks"):
        assert shared_test_ids(q, r) == shared
    assert "20 id(s) are both a query and a reference, e.g. 's00'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval.checks"):
        assert shared_test_ids(q, pd.DataFrame({"id": ["b"]})) == []
    assert caplog.text == ""
