"""A model's eval forward in ONNX: exported with torch (:func:`onnx_bytes`, torch imported only
there), run in ONNX Runtime (:func:`onnx_session`, :func:`embed_views`). The bundle's models,
and the extract stage's embedding loop under ``extract.runtime: onnxruntime``
(:mod:`retrieval.embed.tta`), both use these.

A batch is cut into pieces of a few rows, run at once by one thread per usable core, each run
single-threaded (:class:`ParallelSession`), rather than by one run over ORT's intra-op threads:
those meet at a barrier after every operator, and on 2 cores a lite0 forward at batch 2 costs
about 18% more CPU time with two intra-op threads than with one (11.9 ms an image at 224 px
against 14.0); independent runs have no barrier, so a search's image and its mirror, or an
extract batch's pieces, keep every core busy (and a busy machine's stalls hit one piece only).
"""
from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from retrieval.io import InputError
from retrieval.resources import usable_cores
from retrieval.vectors import l2_normalise

INPUT, OUTPUT = "image", "embedding"  # the exported graph's input and output names
OPSET = 17
PIECE_ROWS = 8  # rows of a batch run together at most: small pieces stay in cache (no faster per image in bigger ones)

# (process id, workers) -> the process's pool of that many threads, shared by every session (keyed
# by the pid too: a forked child inherits the dict, not the threads)
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


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


def _pool(workers: int) -> ThreadPoolExecutor:
    key = (os.getpid(), workers)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="onnx")
        return _POOLS[key]


class ParallelSession:
    """An ONNX Runtime session (single-threaded runs) whose :meth:`run` cuts a batch into
    pieces of at most :data:`PIECE_ROWS` rows, at least one a worker, and runs them at once on
    ``workers`` threads (a pool the process's sessions share; ORT releases the GIL in a run)."""

    def __init__(self, session, workers: int):
        self.session, self.workers = session, max(1, workers)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """The model's float32 output for a [B, 3, H, W] batch, rows in order."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        pieces = max(min(len(x), self.workers), -(-len(x) // PIECE_ROWS))
        if pieces <= 1 or self.workers == 1:
            return self._run(x).astype(np.float32, copy=False)
        parts = [np.ascontiguousarray(p) for p in np.array_split(x, pieces)]
        return np.concatenate(list(_pool(self.workers).map(self._run, parts))).astype(np.float32, copy=False)


def onnx_session(model: bytes | str | Path, threads: int | None = None) -> ParallelSession:
    """A :class:`ParallelSession` of an exported model (a file or its bytes) on ONNX Runtime's
    CPU provider, graph optimised fully, run by ``threads`` workers (default: the cores this
    process may use)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT's errors are one class per cause
        raise InputError(f"{model if not isinstance(model, bytes) else 'model'}: not a loadable ONNX model "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    return ParallelSession(session, threads or usable_cores())


def embed_views(session: ParallelSession, batch: np.ndarray, flip_tta: bool) -> np.ndarray:
    """One input size's L2-normalised embeddings of a batch (with ``flip_tta``, of the image
    plus its mirror, as :func:`retrieval.embed.tta` sums them; both halves run as one batch)."""
    if not flip_tta:
        return l2_normalise(session.run(batch))
    both = session.run(np.concatenate([batch, batch[..., ::-1]]))
    return l2_normalise(both[: len(batch)] + both[len(batch):])
