"""AP@k, mAP@k, P@1 and top-k: golden cases worked out by hand, and a naive cross-check."""
import numpy as np
import pytest

from retrieval.metrics import average_precision, ranking_ap, retrieval_metrics
from retrieval.rank.topk import score_matrix_metrics
from retrieval.rank.topk import rows_best_first, topk, topk_indices

# Shared golden set-up.
# references: 0:a 1:b 2:a 3:c 4:a  -> n_relevant: a=3, b=1, c=1, d=0
REF = np.array(["a", "b", "a", "c", "a"])
QUERIES = np.array(["a", "b", "d"])
RANKED = np.array([
    [0, 1, 2, -1],   # a: relevant at ranks 1, 3 -> (1/1 + 2/3) / 3 = 5/9
    [3, 1, -1, -1],  # b: relevant at rank 2     -> (1/2) / 1     = 1/2
    [0, 1, 2, 3],    # d: no reference labelled d -> 0 (still counted in the mean)
])


def naive_ap(row, query_label, ref_labels, k):
    """Textbook AP@k, one rank at a time."""
    n_rel = sum(1 for label in ref_labels if label == query_label)
    if n_rel == 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, idx in enumerate(row[:k], start=1):
        if idx >= 0 and ref_labels[idx] == query_label:
            hits += 1
            total += hits / rank
    return total / min(n_rel, k)


# --- average_precision -----------------------------------------------------------------------

@pytest.mark.parametrize("relevant,n_rel,k,expected", [
    ([1, 0, 1, 0], 3, 1000, (1 / 1 + 2 / 3) / 3),   # 0.5555...
    ([0, 1, 1], 2, 1000, (1 / 2 + 2 / 3) / 2),       # 7/12 = 0.5833...
    ([1, 1], 2, 1000, 1.0),                          # perfect ranking
    ([0, 0, 0, 1], 4, 1000, (1 / 4) / 4),            # one late hit, three never retrieved
    ([], 2, 1000, 0.0),                              # nothing retrieved
])
def test_average_precision_golden(relevant, n_rel, k, expected):
    assert average_precision(np.array(relevant, dtype=bool), n_rel, k) == pytest.approx(expected)


def test_average_precision_truncates_at_k():
    # ranks beyond k ignored: [1, 0 | 0, 1] with k=2 -> (1/1) / min(2, 2) = 0.5
    assert average_precision(np.array([1, 0, 0, 1], bool), 2, k=2) == pytest.approx(0.5)
    # divisor is min(n_rel, k): [0, 1, 1 | 1, 1], n_rel=5, k=3 -> (1/2 + 2/3) / 3 = 7/18
    assert average_precision(np.array([0, 1, 1, 1, 1], bool), 5, k=3) == pytest.approx(7 / 18)
    # all k ranks relevant with n_rel > k is a perfect score
    assert average_precision(np.array([1, 1, 1], bool), 10, k=3) == pytest.approx(1.0)


def test_average_precision_no_relevant_and_bad_input():
    assert average_precision(np.zeros(5, bool), 0) == 0.0
    with pytest.raises(ValueError, match="n_relevant"):
        average_precision(np.array([1, 1, 0], bool), 1)
    with pytest.raises(ValueError, match="k must be"):
        average_precision(np.array([1], bool), 1, k=0)


# --- topk_indices ----------------------------------------------------------------------------

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


# --- ranking_ap / retrieval_metrics ------------------------------------------------------------

def test_ranking_ap_golden_with_padding_and_no_relevant():
    np.testing.assert_allclose(ranking_ap(RANKED, QUERIES, REF), [5 / 9, 1 / 2, 0.0])


def test_retrieval_metrics_golden():
    m = retrieval_metrics(RANKED, QUERIES, REF)
    # mAP = (5/9 + 1/2 + 0) / 3 = 19/54; P@1: only query a has a relevant first reference
    assert m == pytest.approx({"map@1000": 19 / 54, "p@1": 1 / 3, "n_queries": 3})
    assert type(m["map@1000"]) is float and type(m["p@1"]) is float and type(m["n_queries"]) is int


def test_retrieval_metrics_k_truncation():
    # k=2: a -> [1, 0], n_rel 3 -> 1 / min(3, 2) = 1/2; b -> [0, 1] -> (1/2) / 1; d -> 0
    m = retrieval_metrics(RANKED, QUERIES, REF, k=2)
    assert m["map@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)


def test_p_at_1_empty_ranking_is_a_miss():
    ranked = np.array([[-1, -1], [1, 0]])
    # query a: empty ranking -> miss; query b: ref 1 is b -> hit
    assert retrieval_metrics(ranked, np.array(["a", "b"]), REF)["p@1"] == pytest.approx(0.5)
    no_columns = np.empty((2, 0), dtype=np.int64)
    assert retrieval_metrics(no_columns, np.array(["a", "b"]), REF) == {"map@1000": 0.0, "p@1": 0.0, "n_queries": 2}


def test_integer_labels_and_no_queries():
    ranked = np.array([[2, 0, 1]])
    # label 7 at refs 0 and 2 -> relevant at ranks 1, 2 -> (1 + 1) / 2 = 1
    assert ranking_ap(ranked, np.array([7]), np.array([7, 3, 7]))[0] == pytest.approx(1.0)
    empty = retrieval_metrics(np.empty((0, 3), dtype=int), np.array([], dtype=str), REF)
    assert empty == {"map@1000": 0.0, "p@1": 0.0, "n_queries": 0}


def test_ranking_ap_refuses_bad_rankings():
    with pytest.raises(ValueError, match="more than once"):
        ranking_ap(np.array([[0, 2, 0]]), np.array(["a"]), REF)
    with pytest.raises(ValueError, match="indices must lie"):
        ranking_ap(np.array([[5]]), np.array(["a"]), REF)
    with pytest.raises(ValueError, match="rows"):
        ranking_ap(np.array([[0]]), QUERIES, REF)


@pytest.mark.parametrize("k", [1, 3, 10, 25, 1000])
def test_ranking_ap_matches_naive_loop(k):
    rng = np.random.default_rng(k)
    n_q, n_ref, width = 60, 80, 25
    ref_labels = rng.integers(0, 12, size=n_ref)
    query_labels = rng.integers(0, 14, size=n_q)  # labels 12, 13 have no references
    ranked = np.array([rng.permutation(n_ref)[:width] for _ in range(n_q)])
    ranked[rng.random(ranked.shape) < 0.1] = -1  # padding scattered, also mid-list
    expected = [naive_ap(row, q, ref_labels, k) for row, q in zip(ranked, query_labels)]
    np.testing.assert_allclose(ranking_ap(ranked, query_labels, ref_labels, k), expected, rtol=1e-12)
    m = retrieval_metrics(ranked, query_labels, ref_labels, k)
    assert m[f"map@{k}"] == pytest.approx(np.mean(expected))


def test_score_matrix_metrics_golden():
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2],    # order 0, 2, 3, 4, 1 -> a at 1, 2, 5
                       [0.5, 0.5, 0.0, 0.0, 0.0]])   # tie 0/1 -> order 0, 1, ... -> b at rank 2
    m = score_matrix_metrics(scores, np.array(["a", "b"]), REF, k=3)
    # query a, k=3: relevant [1, 1, 0], n_rel 3 -> (1 + 1) / 3 = 2/3; query b: (1/2) / 1
    assert m == pytest.approx({"map@3": (2 / 3 + 1 / 2) / 2, "p@1": 0.5, "n_queries": 2})
