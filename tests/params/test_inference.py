"""retrieval/params/inference.py: the extract, rerank, ensemble and report sections refuse bad
values in one line naming the key (through ``parse_params``, as the stages read them)."""
import pytest

from retrieval.config import parse_params
from retrieval.io import InputError
from retrieval.params.inference import ExtractParams, IndexParams, RerankParams


@pytest.mark.parametrize("raw,needle", [
    ({"extract": {"scales": []}}, "extract.scales: must be one or more positive factors"),
    ({"extract": {"scales": [1.0, -1.0]}}, "extract.scales: must be one or more positive factors"),
    ({"extract": {"image_size": 31}}, "extract.image_size: Input should be greater than or equal to 32"),
    ({"extract": {"whiten_power": 0}}, "extract.whiten_power"),
    ({"extract": {"whiten_power": 1.5}}, "extract.whiten_power"),
    ({"extract": {"member_weights": []}}, "extract.member_weights: must be non-negative weights"),
    ({"extract": {"member_weights": [0.0]}}, "extract.member_weights: must be non-negative weights"),
    ({"extract": {"member_weights": [-1.0, 2.0]}}, "extract.member_weights"),
    ({"extract": {"num_workers": "many"}}, "extract.num_workers: 'many': a count"),
    ({"extract": {"num_workers": 2.5}}, "extract.num_workers: 2.5: a count"),
    ({"extract": {"bad_query": "skip"}}, "extract.bad_query"),
    ({"extract": {"runtime": "tensorrt"}}, "extract.runtime"),
    ({"rerank": {"qe": {"alpha": -1}}}, "rerank.qe.alpha"),
    ({"rerank": {"diffusion": {"alpha": 1.0}}}, "rerank.diffusion.alpha"),
    ({"rerank": {"kreciprocal": {"lambda_value": 1.5}}}, "rerank.kreciprocal.lambda_value"),
    ({"rerank": {"steps": ["qe", "qe"]}}, "rerank.steps: a step may appear once"),
    ({"rerank": {"steps": ["diffusion", "qe"]}}, "rerank.steps: kreciprocal or diffusion must be the last"),
    ({"rerank": {"steps": ["kreciprocal", "diffusion"]}}, "rerank.steps: kreciprocal or diffusion must be the last"),
    ({"rerank": {"steps": ["whitening"]}}, "rerank.steps.0"),
    ({"rerank": {"index": {"kind": "hnsw"}}}, "rerank.index.kind hnsw works with dba and qe only; diffusion needs"),
    ({"rerank": {"index": {"kind": "flat"}}}, "rerank.index.kind"),
    ({"rerank": {"index": {"seed": 2**40}}}, "rerank.index.seed: Input should be less than"),
    ({"ensemble": {"k": 1001}}, "ensemble.k: Input should be less than or equal to 1000"),
    ({"report": {"thumb": 8}}, "report.thumb"),
    ({"report": {"seed": -1}}, "report.seed: Input should be greater than or equal to 0"),
])
def test_bad_values_name_the_key(raw, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.")):
        parse_params(raw, "params.yaml")


def test_the_edges_that_pass():
    assert RerankParams(steps=[]).steps == []
    assert RerankParams(steps=["dba", "qe", "kreciprocal"]).steps[-1] == "kreciprocal"
    assert RerankParams(steps=["qe", "dba"], index=IndexParams(kind="ivfpq")).index.kind == "ivfpq"
    assert ExtractParams(member_weights=[0.0, 1.0], scales=[0.5]).member_weights == [0.0, 1.0]
