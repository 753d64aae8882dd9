"""Checkpoints: the model's fingerprint is its weights', the same before saving and after loading."""
import torch

from retrieval.config import ModelParams
from retrieval.model.checkpoints import model_fingerprint, models_from_checkpoint, save_members, weights_fingerprint
from retrieval.model.network import build_model


def tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(ModelParams(embedding_dim=8), pretrained="none")


def test_fingerprint_survives_saving_and_loading_and_changes_with_one_weight(tmp_path):
    model, meta = tiny(0)
    save_members(tmp_path / "m.pt", [(model.state_dict(), meta)])
    loaded = models_from_checkpoint(tmp_path / "m.pt")
    assert model_fingerprint(loaded) == weights_fingerprint(model) == model_fingerprint([(model, meta)])
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6  # one weight, a little: retrained
    assert weights_fingerprint(model) != model_fingerprint(loaded)
    assert weights_fingerprint(tiny(1)[0]) != model_fingerprint(loaded)


def test_fingerprint_covers_buffers_too(tmp_path):
    model, _ = tiny(0)
    before = weights_fingerprint(model)
    bn = next(b for name, b in model.named_buffers() if name.endswith("running_mean"))
    bn += 0.5  # BatchNorm statistics alone differ: other embeddings
    assert weights_fingerprint(model) != before


def test_a_fold_of_several_backbones_has_one_fingerprint_of_its_members_in_order(tmp_path):
    (a, meta_a), (b, meta_b) = tiny(0), tiny(1)
    save_members(tmp_path / "m.pt", [(a.state_dict(), meta_a), (b.state_dict(), meta_b)])
    fp = model_fingerprint(models_from_checkpoint(tmp_path / "m.pt"))
    assert fp == model_fingerprint([(a, meta_a), (b, meta_b)])
    assert fp not in (weights_fingerprint(a), weights_fingerprint(b))
    assert fp != model_fingerprint([(b, meta_b), (a, meta_a)])
