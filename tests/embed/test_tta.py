"""extract.runtime: the embedding loop's forward in ONNX Runtime equals torch's, exported once."""
import numpy as np
import torch
from PIL import Image

from retrieval.bundle import onnx_model
from retrieval.embed import tta
from retrieval.embed.tta import embed_tta


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
    want = embed_tta(*args, amp="off")[0]
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
        np.testing.assert_allclose(flipped, embed_tta(*args, amp="off")[0], atol=1e-5)
        assert len(exports) == 2 and not np.allclose(flipped, got, atol=1e-3)
    finally:
        with torch.no_grad():
            model.neck[0].weight.mul_(-1.0)
