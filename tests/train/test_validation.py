"""Validation during training: the figures of held (decoded once) and decoded-each-time images agree."""
import numpy as np
import torch
from train_helpers import make_folds

from retrieval.train import validation


def test_validation_images_held_or_decoded_give_the_same_figures(tiny_model, tmp_path, monkeypatch):
    m, meta = tiny_model
    valid = make_folds(tmp_path).query("fold == 0")
    held = validation.validation_images(str(tmp_path), valid, 40, meta)
    monkeypatch.setattr(validation, "HELD_VALID_BYTES", len(valid) * 40 * 40 * 3 - 1)  # one byte short
    decoded = validation.validation_images(str(tmp_path), valid, 40, meta)
    assert type(held).__name__ == "HeldImages" and type(decoded).__name__ == "ImageDataset"
    a, b = (validation.evaluate(m, ds, valid, 4, 0, "off", True) for ds in (held, decoded))
    assert a["map@1000"] == b["map@1000"] and a["p@1"] == b["p@1"]
    np.testing.assert_array_equal(a["query_ap"], b["query_ap"])
    assert len(a["query_ap"]) == int((valid["role"] == "query").sum())


def test_validation_keeps_the_memory_layout_training_chose(tiny_model, tmp_path):
    m, meta = tiny_model
    valid = make_folds(tmp_path).query("fold == 0")
    images = validation.validation_images(str(tmp_path), valid, 40, meta)
    conv = next(p for p in m.parameters() if p.dim() == 4)
    for channels_last in (False, True):  # train.channels_last, passed through
        m.to(memory_format=torch.contiguous_format)
        validation.evaluate(m, images, valid, 4, 0, "off", channels_last)
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert conv.is_contiguous() != channels_last
