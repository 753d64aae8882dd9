"""Bootstrap intervals, the paired comparison and half-leaderboard wins: golden cases worked by
hand, a naive pure-Python loop with the same seed, and the compare command's output and refusals."""
import json
import math

import numpy as np
import pytest

from retrieval.results.bootstrap import (bootstrap_means, class_bootstrap_means, cv_uncertainty, half_wins, mean_interval,
                                         paired_comparison)
from stages import compare

# Two queries, differences A - B of +0.4 and -0.2: a resample's mean difference is 0.4 (both
# draws query 0, probability 1/4), 0.1 (one each, 1/2) or -0.2 (1/4). Each tail holds 25% of the
# mass, more than the 2.5% a 95% interval cuts, so the interval is exactly [-0.2, 0.4] and the
# share of resamples with A - B > 0 is 3/4. A half is one query: A wins on query 0 only, 1/2.
TWO_A, TWO_B = np.array([0.9, 0.3]), np.array([0.5, 0.5])
# Four queries, differences +0.2, +0.1, +0.1, -0.15 (B at 0.5): of the 6 equally likely halves of
# 2 queries, A's mean is higher in the 3 without query 3 and in {0, 3} (0.2 - 0.15 > 0), lower in
# {1, 3} and {2, 3}: A wins 4 of 6 although its mean is higher by 0.0625.
FOUR_A, FOUR_B = np.array([0.7, 0.6, 0.6, 0.35]), np.full(4, 0.5)


def test_paired_golden_two_queries():
    r = paired_comparison(TWO_A, TWO_B, resamples=20000, seed=1)
    assert r["n_queries"] == 2
    assert r["mean_a"] == pytest.approx(0.6) and r["mean_b"] == pytest.approx(0.5)
    assert r["mean_diff"] == pytest.approx(0.1)
    assert r["diff_ci95"] == pytest.approx([-0.2, 0.4])
    assert r["share_diff_positive"] == pytest.approx(0.75, abs=0.015)  # sd of the estimate 0.003
    assert r["half_wins_a"] == pytest.approx(0.5, abs=0.015)


# Two classes: X with one query (A - B = +0.4), Y with three (-0.2 each). A class resample draws
# {X, X} (1/4: mean +0.4), {Y, Y} (1/4: -0.2) or one of each (1/2: (0.4 - 0.6) / 4 = -0.05), so the
# interval is exactly [-0.2, 0.4] and 1/4 of resamples favour A, where the query bootstrap of
# the same four differences centres on their mean, -0.05, with A ahead far less often.
CLASS_DIFF, CLASSES = np.array([0.4, -0.2, -0.2, -0.2]), np.array(["X", "Y", "Y", "Y"])


def test_paired_golden_two_classes():
    r = paired_comparison(CLASS_DIFF + 0.5, np.full(4, 0.5), resamples=20000, seed=1, classes=CLASSES)
    assert r["n_classes"] == 2 and r["mean_diff"] == pytest.approx(-0.05)
    assert r["class_diff_ci95"] == pytest.approx([-0.2, 0.4])
    assert r["class_share_diff_positive"] == pytest.approx(0.25, abs=0.015)
    means = class_bootstrap_means(CLASS_DIFF, CLASSES, 20000, 1)
    assert set(np.round(means, 12)) == {0.4, -0.2, -0.05}
    assert np.mean(np.isclose(means, -0.05)) == pytest.approx(0.5, abs=0.015)


def naive_class_means(values, classes, resamples, seed):
    """Class resamples by hand: the R x G draws, then each drawn class's queries appended."""
    names = sorted(set(classes))
    members = {c: [v for v, k in zip(values, classes) if k == c] for c in names}
    picks = np.random.default_rng(seed).integers(0, len(names), (resamples, len(names)))
    out = []
    for row in picks:
        drawn = [v for g in row for v in members[names[g]]]
        out.append(sum(drawn) / len(drawn))
    return np.array(out)


@pytest.mark.parametrize("n,n_classes,seed", [(9, 3, 0), (60, 7, 4)])
def test_class_bootstrap_matches_a_naive_loop(n, n_classes, seed):
    rng = np.random.default_rng(n)
    values, classes = rng.uniform(size=n), rng.choice([f"c{i}" for i in range(n_classes)], size=n)
    got = class_bootstrap_means(values, classes, 200, seed)
    np.testing.assert_allclose(got, naive_class_means(values, classes, 200, seed), rtol=0, atol=1e-12)


def test_one_query_per_class_is_the_query_bootstrap():
    values = np.random.default_rng(8).uniform(size=25)
    classes = np.array([f"k{i:02d}" for i in range(25)])  # sorted order = query order
    np.testing.assert_allclose(class_bootstrap_means(values, classes, 300, 3), bootstrap_means(values, 300, 3),
                               rtol=0, atol=1e-12)


def test_classes_that_move_together_widen_the_interval():
    """Ten classes of 30 queries, each class shifted as a whole: the query bootstrap treats the 300
    queries as independent; the class bootstrap sees ten, and its interval is far wider."""
    rng = np.random.default_rng(9)
    classes = np.repeat([f"c{i}" for i in range(10)], 30)
    diff = np.repeat(rng.normal(0, 0.1, 10), 30) + rng.normal(0, 0.01, 300)
    r = paired_comparison(diff, np.zeros(300), classes=classes)
    assert np.diff(r["class_diff_ci95"])[0] > 3 * np.diff(r["diff_ci95"])[0]


def test_class_bootstrap_refuses_a_class_list_of_another_length():
    with pytest.raises(ValueError, match="one class per value"):
        class_bootstrap_means([0.1, 0.2], ["a"])


def test_half_wins_golden_four_queries():
    assert half_wins(FOUR_A, FOUR_B, halves=20000, seed=2) == pytest.approx(4 / 6, abs=0.015)
    assert paired_comparison(FOUR_A, FOUR_B)["mean_diff"] == pytest.approx(0.0625)


def test_interval_contains_the_mean_and_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 5000):
        ap = rng.uniform(size=n)
        low, high = mean_interval(ap)
        assert low < ap.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # about sqrt(100) = 10 times narrower


def test_identical_runs_differ_by_nothing():
    ap = np.random.default_rng(3).uniform(size=40)
    r = paired_comparison(ap, ap.copy())
    assert r["mean_diff"] == 0 and r["diff_ci95"] == [0.0, 0.0]
    assert r["share_diff_positive"] == 0 and r["half_wins_a"] == 0.5


def test_a_better_on_every_query_wins_every_half():
    b = np.random.default_rng(4).uniform(0, 0.9, size=40)
    r = paired_comparison(b + 0.05, b)
    assert r["half_wins_a"] == 1.0 and r["share_diff_positive"] == 1.0
    assert 0 < r["diff_ci95"][0] <= r["mean_diff"] <= r["diff_ci95"][1]
    assert paired_comparison(b, b + 0.05)["half_wins_a"] == 0.0


def naive_percentile(sorted_values, q):
    """numpy's default (linear) percentile, by hand."""
    pos = q / 100 * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def naive_paired(a, b, resamples, seed):
    """The paired comparison as one loop per resample and per half, with Python sums."""
    n, rng = len(a), np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        means.append(sum(a[i] - b[i] for i in idx) / n)
    halves_rng, wins = np.random.default_rng(seed), 0.0
    for _ in range(resamples):
        half = halves_rng.permutation(n)[: n // 2]
        mean_a, mean_b = sum(a[i] for i in half) / len(half), sum(b[i] for i in half) / len(half)
        wins += 1.0 if mean_a > mean_b else 0.5 if mean_a == mean_b else 0.0
    means.sort()
    return {"diff_ci95": [naive_percentile(means, 2.5), naive_percentile(means, 97.5)],
            "share_diff_positive": sum(m > 0 for m in means) / resamples, "half_wins_a": wins / resamples}


@pytest.mark.parametrize("n,seed", [(7, 0), (31, 5), (200, 11)])
def test_matches_a_naive_loop_with_the_same_seed(n, seed):
    rng = np.random.default_rng(100 + n)
    a, b = rng.uniform(size=n), rng.uniform(size=n)
    got, want = paired_comparison(a, b, resamples=300, seed=seed), naive_paired(a, b, 300, seed)
    assert got["diff_ci95"] == pytest.approx(want["diff_ci95"], abs=1e-12)
    assert got["share_diff_positive"] == want["share_diff_positive"]
    assert got["half_wins_a"] == want["half_wins_a"]
    assert got["mean_diff"] == pytest.approx(float(np.mean(a - b)), abs=1e-15)


def test_same_seed_same_numbers_other_seed_other_numbers():
    ap = np.random.default_rng(6).uniform(size=30)
    np.testing.assert_array_equal(bootstrap_means(ap, 50, seed=1), bootstrap_means(ap, 50, seed=1))
    assert not np.array_equal(bootstrap_means(ap, 50, seed=1), bootstrap_means(ap, 50, seed=2))


def test_cv_uncertainty_keys():
    ap = np.random.default_rng(7).uniform(size=60)
    u = cv_uncertainty(ap, np.repeat(["a", "b", "c", "d"], 15), {"0": 0.8, "1": 0.9, "2": 0.85})
    assert set(u) == {"map@1000_ci95_lo", "map@1000_ci95_hi", "map@1000_class_ci95_lo", "map@1000_class_ci95_hi",
                      "fold_map@1000", "fold_map@1000_range"}
    assert u["map@1000_ci95_lo"] < ap.mean() < u["map@1000_ci95_hi"]
    assert u["map@1000_class_ci95_lo"] < ap.mean() < u["map@1000_class_ci95_hi"]
    assert u["fold_map@1000_range"] == pytest.approx(0.1)


def test_paired_refuses_unequal_lengths_and_no_values():
    with pytest.raises(ValueError, match="one length"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="no values"):
        bootstrap_means([])


# --- the compare command -----------------------------------------------------------------------

def write_ap(path, rows, header="query_id,label,ap,p@1", labels=None):
    labels = labels or ["x"] * len(rows)
    path.write_text(header + "\n" + "".join(f"{q},{k},{ap},{int(ap == 1)}\n" for (q, ap), k in zip(rows, labels)))
    return str(path)


def test_compare_prints_and_writes_json(tmp_path, capsys):
    # rows in another order in B: the files are paired by query id, not by row
    a = write_ap(tmp_path / "a.csv", [("q0", 0.9), ("q1", 0.3)])
    b = write_ap(tmp_path / "b.csv", [("q1", 0.5), ("q0", 0.5)])
    out = tmp_path / "cmp.json"
    assert compare.main([a, b, "--resamples", "20000", "--seed", "1", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed) == {"a", "b", "n_queries", "mean_a", "mean_b", "mean_diff", "diff_ci95",
                            "share_diff_positive", "half_wins_a", "resamples", "seed", "n_classes",
                            "class_diff_ci95", "class_share_diff_positive"}
    assert printed["a"] == a and printed["resamples"] == 20000 and printed["seed"] == 1
    want = paired_comparison(TWO_A, TWO_B, 20000, 1, classes=np.array(["x", "x"]))
    assert printed == {**want, "a": a, "b": b, "resamples": 20000, "seed": 1}
    assert printed["n_classes"] == 1 and printed["class_diff_ci95"] == [0.1, 0.1]  # one class: always both queries


def test_compare_by_class_needs_labels_in_both_files(tmp_path, capsys):
    a = write_ap(tmp_path / "a.csv", [("q0", 0.9), ("q1", 0.3)])
    b = tmp_path / "b.csv"
    b.write_text("query_id,ap\nq0,0.5\nq1,0.5\n")
    assert compare.main([a, str(b)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "class_diff_ci95" not in printed and printed["mean_diff"] == pytest.approx(0.1)


@pytest.mark.parametrize("rows_b,header_b,fragments", [
    ([("q0", 0.5), ("q2", 0.5), ("q3", 0.5)], None,
     ["b.csv: query ids differ from", "a.csv's: 1 of its 2 are missing here ('q1')", "2 of the 3 here", "'q2', 'q3'"]),
    ([("q0", 0.5), ("q0", 0.4), ("q1", 0.5)], None, ["b.csv", "query_id 'q0' appears 2 times"]),
    ([("q0", 0.5), ("q1", 0.5)], "query_id,label,score,p@1", ["b.csv", "needs columns query_id,ap", "missing ap"]),
    ([("q0", 0.5), ("q1", "high")], None, ["b.csv", "row 3", "ap 'high' is not a number in [0, 1]"]),
    ([("q0", 0.5), ("q1", 0.5)], "query_id,label,ap,p@1", ["b.csv", "query 'q1' has label 'y'", "a.csv has 'x'",
                                                          "(1 labels differ)"]),
])
def test_compare_refuses_with_one_line(tmp_path, capsys, rows_b, header_b, fragments):
    a = write_ap(tmp_path / "a.csv", [("q0", 0.9), ("q1", 0.3)])
    labels = ["x", "y"] if header_b == "query_id,label,ap,p@1" else None  # that case: q1's label differs
    b = write_ap(tmp_path / "b.csv", rows_b, header_b or "query_id,label,ap,p@1", labels)
    assert compare.main([a, b]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err and err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_compare_refuses_a_missing_file_and_no_queries(tmp_path, capsys):
    a = write_ap(tmp_path / "a.csv", [])
    assert compare.main([a, str(tmp_path / "none.csv")]) == 2
    assert "none.csv: no such file" in capsys.readouterr().err
    assert compare.main([a, a]) == 2
    assert "a.csv: no queries to compare" in capsys.readouterr().err
