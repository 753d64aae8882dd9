"""AP@k, mAP@k and P@1 of rankings: golden cases worked out by hand, and a naive AP loop."""
import numpy as np
import pytest

from retrieval.metrics import MAP, MAP_K, N_QUERIES, P1, VAL_MAP, VAL_P1, map_key, ranking_ap, retrieval_metrics

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


# --- AP of one ranked list: golden cases, each checked against the naive loop too -------------

def ranked_list(relevant, n_rel):
    """A one-query ranking whose ranks hold a relevant reference where ``relevant`` says so, over
    references of which ``n_rel`` carry the query's label "q"."""
    n_other = len(relevant) - sum(relevant)
    refs = np.array(["q"] * n_rel + ["x"] * max(n_other, 1))
    hits, misses = iter(range(n_rel)), iter(range(n_rel, len(refs)))
    return np.array([[next(hits) if r else next(misses) for r in relevant]], dtype=np.int64), refs


@pytest.mark.parametrize("relevant,n_rel,k,expected", [
    ([1, 0, 1, 0], 3, 1000, (1 / 1 + 2 / 3) / 3),   # 0.5555...
    ([0, 1, 1], 2, 1000, (1 / 2 + 2 / 3) / 2),       # 7/12 = 0.5833...
    ([1, 1], 2, 1000, 1.0),                          # perfect ranking
    ([0, 0, 0, 1], 4, 1000, (1 / 4) / 4),            # one late hit, three never retrieved
    ([], 2, 1000, 0.0),                              # nothing retrieved
    ([1, 0, 0, 1], 2, 2, 0.5),                       # ranks beyond k ignored: (1/1) / min(2, 2)
    ([0, 1, 1, 1, 1], 5, 3, 7 / 18),                 # divisor min(n_rel, k): (1/2 + 2/3) / 3
    ([1, 1, 1], 10, 3, 1.0),                         # all k ranks relevant, n_rel > k: perfect
    ([0, 0], 0, 1000, 0.0),                          # no relevant reference at all
])
def test_ranking_ap_golden_one_list(relevant, n_rel, k, expected):
    ranked, refs = ranked_list(relevant, n_rel)
    if not relevant:
        ranked = np.empty((1, 0), np.int64)
    got = ranking_ap(ranked, np.array(["q"]), refs, k)[0]
    assert got == pytest.approx(expected)
    assert got == pytest.approx(naive_ap(ranked[0], "q", refs, k))


def test_k_below_one_is_refused():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        ranking_ap(RANKED, QUERIES, REF, 0)


def test_map_key_names_map_at_k_and_the_pipelines_metric():
    assert map_key(7) == "map@7" and MAP == "map@1000" == map_key(MAP_K)
    assert (VAL_MAP, VAL_P1) == ("val_map@1000", "val_p@1")  # training's history columns and metrics keys
    assert set(retrieval_metrics(RANKED, QUERIES, REF, 7)) == {map_key(7), P1, N_QUERIES}


# --- ranking_ap / retrieval_metrics ------------------------------------------------------------

def test_ranking_ap_golden_with_padding_and_no_relevant():
    np.testing.assert_allclose(ranking_ap(RANKED, QUERIES, REF, MAP_K), [5 / 9, 1 / 2, 0.0])


def test_retrieval_metrics_golden():
    m = retrieval_metrics(RANKED, QUERIES, REF, MAP_K)
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
    assert retrieval_metrics(ranked, np.array(["a", "b"]), REF, MAP_K)["p@1"] == pytest.approx(0.5)
    no_columns = np.empty((2, 0), dtype=np.int64)
    assert retrieval_metrics(no_columns, np.array(["a", "b"]), REF, MAP_K) == {"map@1000": 0.0, "p@1": 0.0, "n_queries": 2}


def test_integer_labels_and_no_queries():
    ranked = np.array([[2, 0, 1]])
    # label 7 at refs 0 and 2 -> relevant at ranks 1, 2 -> (1 + 1) / 2 = 1
    assert ranking_ap(ranked, np.array([7]), np.array([7, 3, 7]), MAP_K)[0] == pytest.approx(1.0)
    empty = retrieval_metrics(np.empty((0, 3), dtype=int), np.array([], dtype=str), REF, MAP_K)
    assert empty == {"map@1000": 0.0, "p@1": 0.0, "n_queries": 0}


def test_ranking_ap_refuses_bad_rankings():
    with pytest.raises(ValueError, match="more than once"):
        ranking_ap(np.array([[0, 2, 0]]), np.array(["a"]), REF, MAP_K)
    with pytest.raises(ValueError, match="indices must lie"):
        ranking_ap(np.array([[5]]), np.array(["a"]), REF, MAP_K)
    with pytest.raises(ValueError, match="rows"):
        ranking_ap(np.array([[0]]), QUERIES, REF, MAP_K)


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

