"""Exporting the pipeline: online steps only, one set of reference ids, the bundle stage."""
import json

import pytest
import yaml

from retrieval.bundle import Bundle
from retrieval.bundle.export import bundle_parts, rerank_settings
from retrieval.embed.feature_file import Features, save_features
from retrieval.embed.whitening import save_whitening
from retrieval.io import InputError, write_json
from retrieval.model.checkpoints import model_fingerprint, save_members
from stages.bundle import main as bundle_stage


def test_only_the_online_steps_go_in(bundle_source):
    params = bundle_source[0]
    rr = rerank_settings(params)
    assert rr["steps"] == ["dba", "qe"] and rr["offline_steps_left_out"] == ["diffusion"]
    assert rr["dba"] == {"k": 2, "alpha": 3.0} and rr["k"] == 40


def test_reference_ids_must_agree_between_folds(bundle_source):
    params, folds, _ = bundle_source
    models, whitenings, refs = folds[1]
    shuffled = Features(refs.ids[::-1], refs.embeddings[::-1], meta=refs.meta)
    with pytest.raises(InputError, match="fold 1: its reference ids differ from fold 0's"):
        bundle_parts(params, {0: folds[0], 1: (models, whitenings, shuffled)})


def write_pipeline_outputs(folder, params, folds) -> None:
    """The files the bundle stage reads, as train and extract write them."""
    for fold, (models, whitenings, refs) in folds.items():
        save_members(folder / f"model{fold}.pt", [(models[0][0].state_dict(), models[0][1])])
        save_features(folder / f"reference{fold}.npz",
                      Features(refs.ids, refs.embeddings, meta={**refs.meta, "model_fingerprint": model_fingerprint(models)}))
        save_whitening(folder / f"whitening{fold}.npz", whitenings, {"fold": fold})
    write_json(folder / "ensemble.json", {"cv": {"map@1000": 0.5}})
    (folder / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))


def stage_args(folder, references="reference{fold}.npz") -> list[str]:
    return ["--params", str(folder / "params.yaml"), "--models", str(folder / "model{fold}.pt"),
            "--references", str(folder / references), "--whitening", str(folder / "whitening{fold}.npz"),
            "--ensemble-metrics", str(folder / "ensemble.json"), "--out", str(folder / "bundle"),
            "--metrics", str(folder / "bundle.json")]


def test_the_stage_writes_a_bundle_and_refuses_features_of_another_model(bundle_source, tmp_path, capsys):
    params, folds, _ = bundle_source
    write_pipeline_outputs(tmp_path, params, folds)
    assert bundle_stage(stage_args(tmp_path)) == 0
    bundle = Bundle.open(tmp_path / "bundle")
    assert bundle.ids == folds[0][2].ids.tolist()
    metrics = json.loads((tmp_path / "bundle.json").read_text())
    assert metrics["steps"] == ["dba", "qe"] and metrics["offline_steps_left_out"] == ["diffusion"]
    # fold 0's model with fold 1's features: refused by the model fingerprint, the bundle kept
    (tmp_path / "swapped0.npz").write_bytes((tmp_path / "reference1.npz").read_bytes())
    (tmp_path / "swapped1.npz").write_bytes((tmp_path / "reference1.npz").read_bytes())
    assert bundle_stage(stage_args(tmp_path, "swapped{fold}.npz")) == 2
    assert "model0.pt is not the model that made" in capsys.readouterr().err
    assert Bundle.open(tmp_path / "bundle").ids == bundle.ids
