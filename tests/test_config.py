"""params.yaml is read into typed sections that refuse unknown keys, wrong types and ranges."""
from pathlib import Path

import pytest
import yaml

from retrieval.config import Params, Section, TrainParams, load_params, parse_params
from retrieval.params.fields import is_off
from retrieval.io import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid_and_complete():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    p = load_params(ROOT / "params.yaml")
    assert p.model.backbone == raw["model"]["backbone"]
    # the file spells out every key the code knows, in the fields' order (docs/params.md's), so
    # the file, the docs and the code read alike
    def same_order(raw: dict, model: type[Section], where: str) -> None:
        assert list(raw) == list(model.model_fields), f"params.yaml {where or 'top level'}: keys or their order"
        for name, value in raw.items():
            if isinstance(value, dict):
                same_order(value, model.model_fields[name].annotation, f"{where}{name}.")
    same_order(raw, Params, "")


def sections_of(model: type[Section] = Params, where: str = ""):
    yield where, model
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            yield from sections_of(info.annotation, f"{where}{name}.")


def test_keys_off_at_their_defaults_come_last_in_each_section():
    # what a user sets first; the research knobs and switches that do nothing as shipped last
    for where, model in sections_of():
        off = [is_off(info) for info in model.model_fields.values()]
        assert off == sorted(off), f"{where.rstrip('.') or 'top level'}: a key declared with Off() before a plain one"
    assert is_off(TrainParams.model_fields["layer_decay"]) and not is_off(TrainParams.model_fields["epochs"])


def test_off_keys_do_nothing_at_their_defaults():
    # an Off() key is an off switch, an identity scale or a section not used: its default is
    # None, 0, 1, False, "none", the plain choice, or a nested section of such a step
    plain = {None, 0, 1, False, "none", "random", "exact"}
    for where, model in sections_of():
        for name, info in model.model_fields.items():
            if is_off(info) and not isinstance(info.default, Section) and name not in ("member_weight_step",
                                                                                       "m_per_class"):
                assert info.default in plain, f"{where}{name}: Off() but its default {info.default!r} acts"


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


# Parameter names that stand for a params key under another name (issue 34).
ALIASES = {
    "p": ("model.gem_p",),                      # GeM's exponent
    "power": ("extract.whiten_power",),         # whitening's eigenvalue exponent
    "top_k": ("rerank.k", "ensemble.k"),        # ranked references kept per query
    "pair_weight": ("train.pair_loss_weight",),
    "bad_images": ("extract.bad_query",),
    "fold_weights": ("ensemble.fold_weights",),
}
# Parameters named like a key that stand for something else: (file, function, parameter) -> why.
NOT_PARAMS = {
    ("retrieval/bundle/onnx_model.py", "onnx_bytes", "size"): "the side of the tracing input (dynamic in the graph)",
    ("retrieval/results/report.py", "confused_pairs", "top"): "the first places counted, not report.top's shown",
}


def params_keys_by_name() -> dict[str, dict[str, object]]:
    """Parameter name -> ``{params key: its default}``: each key's leaf name, and the aliases."""
    by_name: dict[str, dict[str, object]] = {}
    defaults = flat(Params().model_dump())
    for key, value in defaults.items():
        by_name.setdefault(key.rsplit(".", 1)[-1], {})[key] = value
    for name, keys in ALIASES.items():
        by_name.setdefault(name, {}).update({k: defaults[k] for k in keys})
    return by_name


def signature_defaults(path: Path):
    """``(qualified function name, parameter, literal default)`` for each literal default in ``path``."""
    import ast

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from literal_defaults(child, prefix + child.name)
                yield from walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")

    def literal_defaults(fn, qualname):
        a = fn.args
        positional = a.posonlyargs + a.args
        pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
        for arg, default in pairs + [(x, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]:
            try:
                yield qualname, arg.arg, ast.literal_eval(default)
            except ValueError:
                pass  # a name or an expression: not a written-out value

    yield from walk(ast.parse(path.read_text()), "")


def params_default_copies(root: Path) -> list[str]:
    """Literal defaults in ``root``'s modules that restate (or contradict) a params default.

    A parameter named as a params key (its leaf name, or an alias) with any literal default but
    None (None means "not given"); and any parameter whose default is a string or a list equal to
    a key's default (distinctive values; numbers and bools only by name, or 0, 1 and True would
    match everything). ``file:function(param=value)  [key: default]`` each.
    """
    by_name = params_keys_by_name()
    by_value = {repr(v): k for k, v in flat(Params().model_dump()).items() if isinstance(v, (str, list)) and v}
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if rel == "retrieval/config.py" or rel.startswith("retrieval/params/"):
            continue  # the one home of the defaults
        for fn, arg, value in signature_defaults(path):
            keys = by_name.get(arg) if value is not None else None
            if not keys and repr(value) in by_value and not isinstance(value, bool):
                keys = {by_value[repr(value)]: value}
            if keys and (rel, fn, arg) not in NOT_PARAMS:
                same = {k: v for k, v in keys.items() if v == value and type(v) is type(value)}
                said = ", ".join(f"{k}: {v!r}" for k, v in (same or keys).items())
                found.append(f"{rel}:{fn}({arg}={value!r})  [{said}]")
    return found


def test_no_params_default_is_written_outside_config():
    # one home for each default (issue 34): a function taking a params value has no default for
    # it; its caller passes params.<section>.<key>, so changing params.yaml changes every use
    offenders = params_default_copies(ROOT / "retrieval")
    assert not offenders, "defaults of params keys outside retrieval/config.py:\n" + "\n".join(offenders)


def test_the_scan_finds_a_planted_copy(tmp_path):
    pkg = tmp_path / "retrieval" / "rank"
    pkg.mkdir(parents=True)
    (pkg / "planted.py").write_text(
        "class Ranker:\n    def __init__(self, alpha=0.97, tol=1e-6, k=None):\n        pass\n"
        "def gem(x, p=2.0, *, runtime='torch', eps=1e-6, n=3):\n    pass\n"
        "def fit(x, power=1.0, kind='exact', label='x'):\n    pass\n")
    assert params_default_copies(tmp_path / "retrieval") == [
        "retrieval/rank/planted.py:Ranker.__init__(alpha=0.97)  [rerank.diffusion.alpha: 0.97]",
        "retrieval/rank/planted.py:gem(p=2.0)  [model.gem_p: 3.0]",
        "retrieval/rank/planted.py:gem(runtime='torch')  [extract.runtime: 'torch']",
        "retrieval/rank/planted.py:fit(power=1.0)  [extract.whiten_power: 0.5]",
        "retrieval/rank/planted.py:fit(kind='exact')  [rerank.index.kind: 'exact']",
    ]


# the sections' own refusals: tests/params/test_training.py and test_inference.py
@pytest.mark.parametrize("raw,needle", [
    ({"trian": {}}, "trian: is not a known key"),
    ({"train": {"epoch": 3}}, "train.epoch: is not a known key"),
    ({"rerank": {"qe": {"beta": 1}}}, "rerank.qe.beta: is not a known key"),
    ({"model": {"head": "none"}}, "model.head none needs a train.pair_loss"),
    ({"model": {"backbone": ["a", "b"]}, "extract": {"member_weights": [1.0]}},
     "extract.member_weights has 1 weights for 2 backbones"),
    ({"extract": {"whiten_dim": 1024}}, "extract.whiten_dim 1024 exceeds model.embedding_dim 512"),
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


def test_several_errors_name_the_first_and_count_the_rest():
    with pytest.raises(InputError, match=r"^my\.yaml: train\.epochs: .*0 \(and 1 more\)$"):
        parse_params({"train": {"epochs": -1, "lr": -1.0}}, "my.yaml")


def test_an_empty_file_means_every_default_and_a_list_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params() == parse_params(None)
    path.write_text("- train\n- extract\n")
    with pytest.raises(InputError, match="params.yaml: expected a mapping of sections at the top level"):
        load_params(path)
