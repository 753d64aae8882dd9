"""The re-ranking chain: steps in their order, each step's effect on golden cases, and the
validation rankings the rerank stage scores."""
import numpy as np
import pytest

from retrieval.config import QEParams, RerankParams
from retrieval.metrics import MAP, MAP_K, retrieval_metrics
from retrieval.embed.feature_file import Features
from retrieval.rank import chain
from retrieval.rank.chain import rank, validation_ablation, validation_rankings
from retrieval.rank.diffusion import diffusion
from retrieval.rank.kreciprocal import k_reciprocal
from retrieval.rank.expansion import alpha_qe, dba
from retrieval.rank.knn import knn

from rank_vectors import unit


def map_of(q, db, labels, p, steps):
    return retrieval_metrics(rank(q, db, p, len(db), steps)[1], np.array(["A"]), labels, MAP_K)[MAP]


def test_qe_must_help_when_the_top_match_is_easy_and_the_rest_hard():
    """Query q: sim 0.90 to a0, ~0.50 to the other A references, ~0.69 to three B distractors.

    Before: a0, b, b, b, a, a, a -> AP = (1/1 + 2/5 + 3/6 + 4/7) / 4 = 0.6179.
    a0 lies near the other A references (sim 0.8), so q' = q + 0.9 * a0 moves towards them:
    their similarity rises to ~0.66 while the distractors fall to ~0.5, and AP becomes 1.
    """
    q = unit(np.array([[0.9, 0.236, -0.367]]))
    a = [[1, 0, 0], [0.8, 0.0, 0.6], [0.8, 0.05, 0.6], [0.8, -0.05, 0.6]]
    b = [[0.3, 0.5, -0.85], [0.3, 0.55, -0.8], [0.35, 0.5, -0.8]]
    db, labels = unit(np.array(a + b, float)), np.array(list("AAAABBB"))
    p = RerankParams(qe=QEParams(k=1, alpha=1.0))
    before, after = map_of(q, db, labels, p, []), map_of(q, db, labels, p, ["qe"])
    assert before == pytest.approx((1 + 2 / 5 + 3 / 6 + 4 / 7) / 4)
    assert after == pytest.approx(1.0)


def test_dba_must_help_an_outlying_reference_with_a_typical_neighbour():
    """q = e1. a0 (sim 0.90) is typical; a1 (sim 0.50) is an outlier of class A whose nearest
    reference is a0 (0.83); the distractor b sits at 0.60 with only weak neighbours (<= 0.32).

    Before: a0, b, a1 -> AP = (1 + 2/3) / 2 = 0.8333. DBA (k=1, alpha=3) gives a1 a weight
    0.83^3 = 0.57 of a0, lifting it to ~0.67, while b gains only 0.32^3 = 0.03 of a0 (~0.62).
    """
    q = unit(np.array([[1.0, 0.0, 0.0]]))
    db = unit(np.array([[0.9, 0.436, 0.0], [0.5, 0.866, 0.0], [0.6, -0.5, 0.624]]))
    labels = np.array(list("AAB"))
    p = RerankParams(dba=QEParams(k=1, alpha=3.0))
    before, after = map_of(q, db, labels, p, []), map_of(q, db, labels, p, ["dba"])
    assert before == pytest.approx((1 + 2 / 3) / 2)
    assert after == pytest.approx(1.0)


def test_steps_run_in_the_declared_order(data):
    q, d = data
    p = RerankParams(dba=QEParams(k=3, alpha=1.0), qe=QEParams(k=2, alpha=1.0))
    s, i = rank(q, d, p, 5, ["dba", "qe"])
    d2 = dba(d, 3, 1.0)
    s2, i2 = knn(alpha_qe(q, d2, 2, 1.0), d2, 5)
    np.testing.assert_array_equal(i, i2)
    _, i3 = rank(q, d, p, 5, ["qe", "dba"])  # QE against the raw database, then DBA
    d3 = dba(d, 3, 1.0)
    np.testing.assert_array_equal(i3, knn(alpha_qe(q, d, 2, 1.0), d3, 5)[1])
    np.testing.assert_array_equal(rank(q, d, p, 5, [])[1], knn(q, d, 5)[1])


@pytest.mark.parametrize("step", ["kreciprocal", "diffusion"])
def test_a_graph_step_ranks_with_its_own_params_section(data, step):
    q, d = data
    p = RerankParams(kreciprocal={"k1": 4, "k2": 2, "lambda_value": 0.5}, diffusion={"k": 4, "query_k": 2})
    got = rank(q, d, p, 12, ["dba", step])
    d2 = dba(d, p.dba.k, p.dba.alpha)
    want = k_reciprocal(q, d2, p.kreciprocal, 12) if step == "kreciprocal" else diffusion(q, d2, p.diffusion, 12)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert not np.array_equal(got[1], rank(q, d, p, 12, ["dba"])[1])  # the step changed the ranking


def test_unknown_step_is_refused(data):
    q, d = data
    with pytest.raises(ValueError, match="unknown re-ranking step 'whiten'"):
        rank(q, d, RerankParams(), 5, ["whiten"])


def valid_features(seed=0):
    """20 validation queries and 40 references around 6 class centres."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 60).astype(str)
    centres = rng.normal(size=(6, 8))
    x = unit(centres[labels.astype(int)] + 0.9 * rng.normal(size=(60, 8)))
    roles = np.where(np.arange(60) < 20, "query", "reference")
    return Features([f"v{i}" for i in range(60)], x, labels, roles)


def test_validation_rankings_run_each_chain_once(monkeypatch):
    valid = valid_features()
    p = RerankParams(steps=["dba", "qe", "diffusion"], diffusion={"k": 5, "query_k": 3})
    calls = []
    real = chain.rank
    monkeypatch.setattr(chain, "rank", lambda *a: calls.append(a[4]) or real(*a))
    out = validation_rankings(valid, p, 30)
    assert calls == [[], ["dba"], ["qe"], ["diffusion"], ["dba", "qe", "diffusion"]]
    assert list(out) == ["none", "dba", "qe", "diffusion", "final"]
    q = valid.roles == "query"
    for name, steps in zip(out, calls):
        want = real(valid.embeddings[q], valid.embeddings[~q], p, 30, steps)
        np.testing.assert_array_equal(out[name][0], want[0])
        np.testing.assert_array_equal(out[name][1], want[1])
    assert out["final"][1].shape == (20, 30)


def test_validation_ablation_scores_each_ranking_at_its_cut_off():
    valid = valid_features(1)
    p = RerankParams(steps=["dba"])
    rankings = validation_rankings(valid, p, 40)
    q = valid.roles == "query"
    got = validation_ablation(valid, rankings, 5)
    assert list(got) == ["none", "dba", "final"]
    for name, (_, idx) in rankings.items():
        assert got[name] == retrieval_metrics(idx[:, :5], valid.labels[q], valid.labels[~q], 5)
    assert got["none"]["map@5"] != got["dba"]["map@5"]  # the variants differ: the test can fail
