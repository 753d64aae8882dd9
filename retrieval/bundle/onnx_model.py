"""A model's eval forward in ONNX: exported with torch (:func:`onnx_bytes`, torch imported only
there), run in ONNX Runtime (:func:`onnx_session`, :func:`embed_views`). The bundle's models,
and the extract stage's embedding loop under ``extract.runtime: onnxruntime``
(:mod:`retrieval.embed.tta`), both use these."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from retrieval.vectors import l2_normalise
from retrieval.io import InputError
from retrieval.resources import usable_cores

INPUT, OUTPUT = "image", "embedding"  # the exported graph's input and output names
OPSET = 17


def onnx_bytes(model, size: int = 64) -> bytes:
    """The model's eval forward (image batch -> L2-normalised embeddings) as ONNX, with a
    dynamic batch and input size, in float32; the model is left as it was."""
    import copy

    import torch

    model = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    out = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), out, input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return out.getvalue()


def onnx_session(model: bytes | str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session of an exported model (a file or its bytes), ``threads``
    intra-op threads (default: the cores this process may use)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or usable_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT's errors are one class per cause
        raise InputError(f"{model if not isinstance(model, bytes) else 'model'}: not a loadable ONNX model "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def run_session(session, x: np.ndarray) -> np.ndarray:
    """The session's output for a float32 [B, 3, H, W] batch."""
    return session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0].astype(np.float32)


def embed_views(session, batch: np.ndarray, flip_tta: bool) -> np.ndarray:
    """One input size's L2-normalised embeddings of a batch (with ``flip_tta``, of the image
    plus its mirror, as :func:`retrieval.embed.tta` sums them; both halves run as one batch)."""
    if not flip_tta:
        return l2_normalise(run_session(session, batch))
    both = run_session(session, np.concatenate([batch, batch[..., ::-1]]))
    return l2_normalise(both[: len(batch)] + both[len(batch):])
