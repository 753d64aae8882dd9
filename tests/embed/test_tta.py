"""The embedding loop: multi-scale TTA sizes and sums (against a naive sum), and extract.runtime:
the forward in ONNX Runtime equals torch's, exported once."""
import numpy as np
import torch
from PIL import Image

from retrieval.bundle import onnx_model
from retrieval.embed import tta
from retrieval.embed.tta import embed_images, embed_tta, tta_sizes


def test_onnxruntime_embeddings_equal_torch_and_the_model_is_exported_once(tiny_model, tmp_path, monkeypatch):
    model, meta = tiny_model
    rng = np.random.default_rng(0)
    images = []
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append(f"{i}.png")
    exports = []
    monkeypatch.setattr(tta, "_ONNX", type(tta._ONNX)())  # tiny_model may have been exported by another test
    real = onnx_model.onnx_bytes
    monkeypatch.setattr(onnx_model, "onnx_bytes", lambda m: exports.append(1) or real(m))
    args = (model, meta, tmp_path, images, 48, [1.0, 1.5], True, 2, 0)
    want = embed_tta(*args, amp="off", runtime="torch")[0]
    got = embed_tta(*args, amp="off", runtime="onnxruntime")[0]
    again = embed_tta(*args, amp="bf16", runtime="onnxruntime")[0]  # fp32 whatever amp says
    assert got.shape == want.shape == (5, 8)
    assert (got * want).sum(axis=1).min() >= 0.9999
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(again, got) and len(exports) == 1
    assert next(model.parameters()).dtype == torch.float32  # the export left the model as it was
    assert model in tta._ONNX
    with torch.no_grad():  # new weights in the same model object: exported again, new embeddings
        model.neck[0].weight.mul_(-1.0)
    try:
        flipped = embed_tta(*args, amp="off", runtime="onnxruntime")[0]
        np.testing.assert_allclose(flipped, embed_tta(*args, amp="off", runtime="torch")[0], atol=1e-5)
        assert len(exports) == 2 and not np.allclose(flipped, got, atol=1e-3)
    finally:
        with torch.no_grad():
            model.neck[0].weight.mul_(-1.0)


def test_tta_sizes_golden():
    assert tta_sizes(224, [0.75, 1.0, 1.25]) == [168, 224, 280]
    assert tta_sizes(101, [1.0]) == [104]  # 101 / 8 = 12.6 -> 13 x 8
    assert tta_sizes(60, [0.5]) == [32]  # 30 / 8 = 3.75 -> 4 x 8


def test_multiscale_tta_is_normalised_sum_of_scales(tiny_model, tmp_path):
    m, meta = tiny_model
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, size=(50, 60, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    images = [f"{i}.png" for i in range(3)]
    run = {"batch_size": 64, "num_workers": 0, "amp": "off"}
    one, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0], flip_tta=True, runtime="torch", **run)
    plain, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=True, channels_last=True, **run)
    np.testing.assert_allclose(one, plain, atol=1e-6)  # one scale: the same (renormalised) embeddings
    two, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0, 1.5], flip_tta=False, runtime="torch", **run)
    a, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=False, channels_last=True, **run)
    b, _ = embed_images(m, meta, tmp_path, images, 72, flip_tta=False, channels_last=True, **run)
    naive = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_array_equal(two, naive)  # one decoding per image: the same bits
    assert not np.allclose(two, a, atol=1e-3)  # the second scale did change something
