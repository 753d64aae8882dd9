"""Per-query AP files: they average to the metrics they come from (through the CSV round trip),
pool folds, and refuse faulty or stale files with one line naming the file."""
import numpy as np
import pandas as pd
import pytest

from retrieval.config import RerankParams
from retrieval.embed.feature_file import Features
from retrieval.io import InputError
from retrieval.metrics import MAP_K
from retrieval.rank.chain import validation_ablation, validation_rankings
from retrieval.results.per_query import AP, COLUMNS, FOLD, P1, QUERY_ID, check_matches_metrics, pool_folds, read_per_query, validation_per_query, write_per_query


def fake_valid(n_classes=12, per_class=8, seed=0):
    """Validation features: noisy class centres, about 40% of each class's images queries."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"c{i}" for i in range(n_classes)], per_class)
    x = rng.normal(size=(n_classes, 16))[np.arange(n_classes).repeat(per_class)] + rng.normal(size=(len(labels), 16))
    roles = np.where(rng.uniform(size=len(labels)) < 0.4, "query", "reference")
    return Features([f"v{i:03d}" for i in range(len(labels))], x / np.linalg.norm(x, axis=1, keepdims=True),
                    labels, roles)


@pytest.mark.parametrize("steps", [[], ["dba", "qe", "diffusion"]])
def test_validation_file_averages_exactly_to_the_final_metrics(tmp_path, steps):
    valid = fake_valid()
    p = RerankParams(steps=steps, diffusion={"k": 5, "query_k": 3})
    rankings = validation_rankings(valid, p, MAP_K)
    final = validation_ablation(valid, rankings, MAP_K)["final"]
    write_per_query(tmp_path / "valid_ap.csv", validation_per_query(valid, rankings["final"][1], MAP_K))
    table = read_per_query(tmp_path / "valid_ap.csv", COLUMNS)
    assert list(table.columns) == list(COLUMNS)
    assert table[QUERY_ID].tolist() == valid.ids[valid.roles == "query"].tolist()
    assert len(table) == final["n_queries"] > 30 and 0 < final["map@1000"] < 1
    assert np.mean(table[AP].to_numpy()) == final["map@1000"]  # exactly: floats round-trip the CSV
    assert np.mean(table[P1].to_numpy()) == final["p@1"]


def test_pool_folds_puts_fold_first_and_keeps_order():
    a = pd.DataFrame({QUERY_ID: ["q1", "q0"], AP: [0.5, 1.0]})
    b = pd.DataFrame({QUERY_ID: ["q9"], AP: [0.25]})
    pooled = pool_folds({2: a, 0: b})
    assert list(pooled.columns) == [FOLD, QUERY_ID, AP]
    assert pooled[FOLD].tolist() == [2, 2, 0] and pooled[QUERY_ID].tolist() == ["q1", "q0", "q9"]


def test_stale_file_is_refused_against_its_metrics():
    table = pd.DataFrame({QUERY_ID: ["q0", "q1"], AP: [0.5, 1.0]})
    check_matches_metrics("v.csv", table, {"n_queries": 2, "map@1000": 0.75}, "m.json")
    with pytest.raises(InputError, match="v.csv: 2 queries with mean ap 0.750000, but m.json has 3"):
        check_matches_metrics("v.csv", table, {"n_queries": 3, "map@1000": 0.75}, "m.json")
    with pytest.raises(InputError, match="re-run rerank"):
        check_matches_metrics("v.csv", table, {"n_queries": 2, "map@1000": 0.7}, "m.json")


@pytest.mark.parametrize("text,fragment", [
    ("query_id,ap,p@1\nq0,0.5,1\n,0.5,0\n", "row 3: empty query_id"),
    ("query_id,ap,p@1\nq0,0.5,1\nq1,1.5,0\n", "row 3: ap '1.5' is not a number in [0, 1]"),
    ("query_id,ap,p@1\nq0,0.5,1\nq1,0.5,0.5\n", "row 3: p@1 '0.5' is not 0 or 1"),
    ("query_id,ap\nq0,\n", "row 2: ap '' is not a number"),
    ("", "cannot parse"),
])
def test_read_refusals_name_file_and_row(tmp_path, text, fragment):
    path = tmp_path / "ap.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_per_query(path)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)
