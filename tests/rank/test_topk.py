"""Top-k with one tie rule (higher first, equal scores by the lower index) against naive sorts,
on every path (float32 sampled threshold, partition, crowded ties), and the helpers that order
lists found elsewhere by the same rule."""
import numpy as np
import pytest

from retrieval.rank.topk import best_first, drop_self, rows_best_first, topk, topk_indices, topk_indices_by


def naive_topk(scores, k):
    return np.array([sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in scores])


def test_topk_ties_broken_by_lower_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1],
                       [1.0, 1.0, 1.0, 1.0, 1.0]])
    # row 0: 0.9 at 1 and 3, then 0.5 at 0 (not 2); row 1: all tied -> 0, 1, 2
    np.testing.assert_array_equal(topk_indices(scores, 3), [[1, 3, 0], [0, 1, 2]])


def test_topk_matches_naive_on_heavy_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(40, 30)).astype(np.float32)  # many ties at every rank
    for k in (1, 5, 29, 30, 50):
        np.testing.assert_array_equal(topk_indices(scores, k), naive_topk(scores, k))
    ints = rng.integers(0, 3, size=(5, 9)).astype(np.uint8)  # unsigned: no negation trouble
    np.testing.assert_array_equal(topk_indices(ints, 4), naive_topk(ints.astype(int), 4))


def test_topk_shapes_and_input_checks():
    assert topk_indices(np.zeros((3, 4)), 10).shape == (3, 4)
    assert topk_indices(np.zeros((3, 4)), 0).shape == (3, 0)
    np.testing.assert_array_equal(topk_indices(np.array([0.2, 0.7, 0.7]), 2), [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        topk_indices(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="k must be"):
        topk_indices(np.zeros((2, 2)), -1)


def test_topk_float32_path_matches_partition_path_and_naive():
    # float32 rows take the sampled-threshold path; float64 ones the partition path: same rule
    rng = np.random.default_rng(2)
    for n_rows, n_cols, k in ((7, 3000, 1000), (5, 400, 37), (3, 50, 50), (4, 2000, 1)):
        scores = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
        scores[1] = np.round(scores[1], 1)  # ties at every rank, the k-th place included
        scores[2, ::3] = -0.0  # equal to +0.0: ties by the lower index across the two zeros
        scores[2, 1::3] = 0.0
        got = topk_indices(scores, k)
        np.testing.assert_array_equal(got, topk_indices(scores.astype(np.float64), k))
        np.testing.assert_array_equal(got[1:3], naive_topk(scores[1:3], k))


def test_topk_float32_when_the_sample_guesses_too_high():
    # every sampled column (0, 25, 50, ...) holds a row's highest scores, so the sampled
    # threshold admits fewer than k columns and the exact k-th value must be taken instead
    scores = np.zeros((2, 5000), np.float32)
    scores[:, ::25] = 1.0
    scores[1, 7] = np.inf
    scores[0, 3] = -np.inf
    want = naive_topk(scores, 1000)
    np.testing.assert_array_equal(topk_indices(scores, 1000), want)
    assert want[1, 0] == 7 and set(want[0, :200]) == set(range(0, 5000, 25))  # the test can fail


def test_topk_float32_refuses_nan_anywhere_in_a_row():
    scores = np.random.default_rng(3).standard_normal((3, 4000)).astype(np.float32)
    scores[2, 3999] = np.nan  # not a sampled column, far below the top: still refused
    with pytest.raises(ValueError, match="NaN"):
        topk_indices(scores, 1000)


def test_topk_float32_when_the_sample_guesses_too_low_or_ties_crowd_the_width():
    # k = 1000 samples every 25th column. Row 0: the sampled columns hold its lowest scores, so
    # the sampled threshold admits all 5,000 columns, more than the keys' width (2k + 64), and
    # the exact k-th value is taken instead. Row 1: 3,000 columns tied at the k-th value, more
    # than the width even then, so the row takes the partition path.
    rng = np.random.default_rng(4)
    scores = rng.uniform(0.5, 1.0, (2, 5000)).astype(np.float32)
    scores[0, ::25] = -1.0
    scores[1, 500:3500] = 0.25
    scores[1, 3500:] = rng.uniform(0.0, 0.2, 1500).astype(np.float32)
    got = topk_indices(scores, 1000)
    np.testing.assert_array_equal(got, naive_topk(scores, 1000))
    np.testing.assert_array_equal(got[1, 500:], np.arange(500, 1000))  # the tie settled by the lower index


def test_topk_values_are_the_scores_at_the_indices_on_every_path():
    # the float32 path reads its values back from the packed keys: negative, -0.0, infinite,
    # a row the sample guesses wrong, a row crowded by ties (partition path), and float64
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((5, 5000)).astype(np.float32)
    scores[0, ::3] = -0.0
    scores[1, ::25] = -1e30  # the sample guesses too low
    scores[2, 500:3500] = np.float32(-0.25)  # crowded: 3,000 ties at the k-th value
    scores[2, 3500:] = -5.0
    scores[3, 11], scores[3, 12] = np.inf, -np.inf
    for s, k in ((scores, 1000), (scores, 7), (scores.astype(np.float64), 1000), (scores[:, :40], 60)):
        vals, idx = topk(s, k)
        np.testing.assert_array_equal(idx, topk_indices(s, k))
        np.testing.assert_array_equal(vals, np.take_along_axis(s, idx, 1))
        assert vals.dtype == s.dtype
    assert topk(scores, 1000)[1][3, 0] == 11  # the test can fail
    with pytest.raises(ValueError, match="2-D"):
        topk(scores[0], 3)


def test_topk_float32_refuses_nan_in_a_sampled_column():
    scores = np.random.default_rng(6).standard_normal((2, 4000)).astype(np.float32)
    scores[1, 50] = np.nan  # column 50 is in k = 1000's sample (every 25th)
    with pytest.raises(ValueError, match="NaN"):
        topk(scores, 1000)


def naive_rows_best_first(scores, ids):
    order = [sorted(range(len(s)), key=lambda j: (-s[j], i[j])) for s, i in zip(scores, ids)]
    return (np.array([s[o] for s, o in zip(scores, order)]), np.array([i[o] for i, o in zip(ids, order)]))


def test_rows_best_first_matches_naive_sorted_and_unsorted_rows():
    rng = np.random.default_rng(1)
    pad = np.iinfo(np.int64).max
    scores = np.sort(rng.integers(0, 4, size=(30, 12)).astype(np.float32), axis=1)[:, ::-1].copy()
    ids = np.stack([rng.permutation(50)[:12] for _ in range(30)])  # ties in either id order
    scores[:3, -2:], ids[:3, -2:] = -np.inf, pad  # missing results: -inf with an id past every real one
    ids[5] = np.sort(ids[5])[::-1]  # a row whose ties are all in the wrong order
    scores[7] = scores[7][::-1]  # and one not sorted at all
    got_s, got_i = rows_best_first(scores, ids)
    want_s, want_i = naive_rows_best_first(scores, ids)
    np.testing.assert_array_equal(got_s, want_s)
    np.testing.assert_array_equal(got_i, want_i)
    assert not np.array_equal(ids, want_i)  # the input had rows out of order (the test can fail)


def test_rows_best_first_keeps_ordered_rows_and_does_not_touch_its_input():
    scores = np.array([[3.0, 2.0, 2.0, -np.inf], [1.0, 1.0, 0.0, 0.0]], np.float32)
    ids = np.array([[4, 1, 7, 2**63 - 1], [5, 2, 0, 9]])
    keep = scores.copy(), ids.copy()
    s, i = rows_best_first(scores, ids)
    np.testing.assert_array_equal(i, [[4, 1, 7, 2**63 - 1], [2, 5, 0, 9]])  # row 1's tie: 2 before 5
    np.testing.assert_array_equal(scores, keep[0]), np.testing.assert_array_equal(ids, keep[1])




def test_best_first_golden_with_a_second_score_and_groups():
    s = np.array([0.5, 0.9, 0.5, 0.5])
    ids = np.array([2, 1, 0, 5])
    assert best_first(s, ids=ids).tolist() == [1, 2, 0, 3]  # 0.9, then the 0.5s by id 0, 2, 5
    second = np.array([0.0, 0.0, 0.1, 0.7])
    assert best_first(s, second, ids=ids).tolist() == [1, 3, 2, 0]  # ties by the second score first
    groups = np.array([1, 1, 0, 0])
    assert best_first(s, ids=ids, groups=groups).tolist() == [2, 3, 1, 0]  # group 0 first


def naive_topk_by(primary, secondary, k):
    return np.array([sorted(range(len(p)), key=lambda j: (-p[j], -s[j], j))[:k] for p, s in zip(primary, secondary)])


@pytest.mark.parametrize("k", [1, 4, 7, 12, 20])
def test_topk_indices_by_matches_naive_with_ties_across_the_kth_place(k):
    rng = np.random.default_rng(k)
    primary = rng.integers(0, 3, size=(25, 12)).astype(np.float64)  # tie groups straddle the k-th place
    secondary = rng.integers(0, 2, size=(25, 12)).astype(np.float64)  # and ties in the second key too
    np.testing.assert_array_equal(topk_indices_by(primary, secondary, k), naive_topk_by(primary, secondary, k))


def test_drop_self_golden_and_with_duplicates():
    # row 1's own entry comes second (a tie with row 0); row 2's is crowded out by duplicates (0, 3)
    idx = np.array([[0, 2, 1], [0, 1, 2], [0, 3, 1], [3, 2, 0]])
    scores = np.array([[1.0, 0.5, 0.2], [1.0, 1.0, 0.1], [1.0, 1.0, 0.4], [1.0, 0.6, 0.3]])
    s, i = drop_self(scores, idx)
    assert i.tolist() == [[2, 1], [0, 2], [0, 3], [2, 0]]
    assert s.tolist() == [[0.5, 0.2], [1.0, 0.1], [1.0, 1.0], [0.6, 0.3]]
