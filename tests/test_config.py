"""params.yaml is read into typed sections that refuse unknown keys, wrong types and ranges."""
import inspect
from pathlib import Path

import pytest
import yaml

from retrieval.config import DemoParams, Params, load_params, parse_params
from retrieval.io import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_and_complete():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = load_params(ROOT / "params.yaml")
    assert p.model.backbone == raw["model"]["backbone"]
    # the file spells out every key the code knows, so the README's table can be trusted
    assert raw.keys() == Params.model_fields.keys()
    for section, value in raw.items():
        if isinstance(value, dict):
            assert value.keys() == type(getattr(p, section)).model_fields.keys(), section


def flat(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_library_defaults_are_the_params_yaml_values():
    # one home for defaults (issue 13): a key left out of params.yaml means what the file says
    written = flat(load_params(ROOT / "params.yaml").model_dump())
    defaults = flat(Params().model_dump())
    assert written.keys() == defaults.keys()
    differ = {k: (written[k], defaults[k]) for k in written if written[k] != defaults[k]}
    assert not differ, f"params.yaml vs retrieval/config.py defaults: {differ}"


def library_functions():
    """Functions whose keyword defaults stand for params keys: ``(function, {argument: key})``."""
    from retrieval.data.demo import make_demo
    from retrieval.model.losses import MetricLoss, margin_loss
    from retrieval.model.network import GeM
    from retrieval.rank.diffusion import diffusion
    from retrieval.rank.kreciprocal import k_reciprocal
    from retrieval.results.report import render_grid, render_html
    ranking = {"top_k": "rerank.k"}
    return [
        (diffusion, {a: f"rerank.diffusion.{a}" for a in ("k", "alpha", "gamma", "query_k")} | ranking),
        (k_reciprocal, {a: f"rerank.kreciprocal.{a}" for a in ("k1", "k2", "lambda_value")} | ranking),
        (make_demo, {a: f"demo.{a}" for a in DemoParams.model_fields}),
        (margin_loss, {"sub_centers": "model.sub_centers"}),
        (MetricLoss.__init__, {"pair_weight": "train.pair_loss_weight"}),
        (GeM.__init__, {"p": "model.gem_p"}),
        (render_grid, {"thumb": "report.thumb"}),
        (render_html, {"thumb": "report.thumb"}),
    ]


def test_library_function_defaults_are_the_params_yaml_values():
    # the rest (embed_tta's scales and flip_tta, ...) have no default: their callers pass params
    written = flat(load_params(ROOT / "params.yaml").model_dump())
    for fn, keys in library_functions():
        sig = inspect.signature(fn)
        for arg, key in keys.items():
            assert sig.parameters[arg].default == written[key], f"{fn.__qualname__}({arg}=...) vs {key}"


@pytest.mark.parametrize("raw,needle", [
    ({"train": {"epoch": 3}}, "train.epoch: is not a known key"),
    ({"trian": {}}, "trian: is not a known key"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"split": {"query_fraction": 1.5}}, "split.query_fraction"),
    ({"cv": {"folds": [0, 3]}}, "cv.folds"),
    ({"cv": {"folds": [1, 1]}}, "cv.folds"),
    ({"cv": {"n_folds": 1, "folds": [0]}}, "cv.n_folds"),
    ({"model": {"head": "none"}}, "train.pair_loss"),
    ({"train": {"sampler": "pk", "batch_size": 30}}, "train.m_per_class"),
    ({"train": {"final_epochs": 2}}, "train.final_image_size"),
    ({"train": {"epochs": 2, "final_epochs": 3, "final_image_size": 256}}, "train.final_epochs"),
    ({"extract": {"scales": []}}, "extract.scales"),
    ({"train": {"num_workers": -1}}, "train.num_workers: -1: a count of worker processes"),
    ({"extract": {"num_workers": "many"}}, "extract.num_workers: 'many': a count"),
    ({"extract": {"num_workers": 2.5}}, "extract.num_workers: 2.5: a count"),
    ({"extract": {"scales": [1.0, -1.0]}}, "extract.scales"),
    ({"extract": {"whiten_dim": 1024}}, "extract.whiten_dim"),
    ({"extract": {"whiten_power": 0}}, "extract.whiten_power"),
    ({"extract": {"whiten_power": 1.5}}, "extract.whiten_power"),
    ({"model": {"head": "softmax"}}, "model.head"),
    ({"rerank": {"qe": {"alpha": -1}}}, "rerank.qe.alpha"),
    ({"rerank": {"steps": ["qe", "qe"]}}, "rerank.steps: a step may appear once"),
    ({"rerank": {"steps": ["diffusion", "qe"]}}, "rerank.steps: kreciprocal or diffusion must be the last"),
    ({"rerank": {"steps": ["kreciprocal", "diffusion"]}}, "rerank.steps"),
    ({"rerank": {"steps": ["whitening"]}}, "rerank.steps.0"),
    # across sections: refused here, before any stage runs (issue 15)
    ({"ensemble": {"fold_weights": [1, 1]}}, "ensemble.fold_weights has 2 weights for the 3 folds of cv.folds"),
    ({"cv": {"folds": [0]}, "ensemble": {"fold_weights": [0.0]}}, "ensemble.fold_weights must be non-negative, not all zero"),
    ({"extract": {"scales": [1.0, 0.03]}}, "extract.scales: 0.03 x extract.image_size 224 is 7 px, under the minimum of 32 px"),
    ({"train": {"nproc": 4, "batch_size": 30}}, "train.batch_size 30 must be a multiple of train.nproc 4"),
    ({"train": {"nproc": 2, "batch_size": 8, "sampler": "pk", "m_per_class": 8}}, "not a multiple of train.m_per_class 8"),
])
def test_bad_params_name_the_key(raw, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.")):
        parse_params(raw, "params.yaml")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_params(tmp_path / "none.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize("raw,needle", [
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 2**32}, "seed: Input should be less than 4294967296"),
    ({"demo": {"seed": -1}}, "demo.seed: Input should be greater than or equal to 0"),
    ({"report": {"seed": -1}}, "report.seed: Input should be greater than or equal to 0"),
    ({"rerank": {"index": {"seed": 2**40}}}, "rerank.index.seed: Input should be less than"),
    # YAML's yes/no/true are bools: not an epoch count, a size or a factor
    ({"train": {"epochs": True}}, "train.epochs: Input should be a valid integer"),
    ({"train": {"batch_size": 8.0}}, "train.batch_size: Input should be a valid integer"),
    ({"train": {"lr": True}}, "train.lr: Input should be a valid number"),
    ({"extract": {"flip_tta": 1}}, "extract.flip_tta: Input should be a valid boolean"),
    ({"train": {"amp": True}}, "train.amp: Input should be 'auto', 'bf16' or 'off'"),
])
def test_seeds_and_strict_types_name_the_key(raw, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        parse_params(raw, "params.yaml")


def test_amp_off_as_written_in_yaml_is_off(tmp_path):
    # a bare `off`, as params.yaml's comment writes it, is YAML's false
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  amp: off\nextract:\n  amp: off\n")
    p = load_params(path)
    assert (p.train.amp, p.extract.amp) == ("off", "off")
    assert parse_params({"seed": 2**32 - 1, "train": {"lr": 1}}).train.lr == 1.0  # an int is a number


def test_every_key_dvc_yaml_interpolates_is_in_params_yaml():
    # DVC reads ${...} from params.yaml itself, before any stage runs: a key left out of the file
    # fails there with a message about dvc.yaml, so these keys must stay in params.yaml
    import re
    text = (ROOT / "dvc.yaml").read_text()
    keys = sorted(set(re.findall(r"\$\{([\w.]+)\}", text)) - {"item"})
    assert keys, "dvc.yaml interpolates no params key?"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in keys:
        value = raw
        for part in key.split("."):
            assert isinstance(value, dict) and part in value, f"dvc.yaml's ${{{key}}} is not in params.yaml"
            value = value[part]
    header = "".join(line for line in (ROOT / "params.yaml").read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    for key in keys:  # and the file says that they must stay
        assert key in header, f"params.yaml's header does not say that {key} must stay in the file"
