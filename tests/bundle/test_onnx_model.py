"""The models in ONNX Runtime: equal to the torch forward, a batch cut into pieces run at once
on the pool's threads with its rows in order, flip TTA as the pipeline sums it, bad files refused."""
import threading
import time

import numpy as np
import pytest
import torch

from retrieval.bundle.onnx_model import PIECE_ROWS, ParallelSession, embed_views, onnx_bytes, onnx_session
from retrieval.io import InputError
from retrieval.vectors import l2_normalise


class RowSums:
    """A stand-in ORT session: each row's channel sums (a [B, 3] output that names the row),
    recording each run's batch size and thread, and how many runs were in flight at once."""

    def __init__(self, pause: float = 0.0):
        self.calls, self.pause, self.lock, self.running, self.most = [], pause, threading.Lock(), 0, 0

    def run(self, outputs, feeds):
        x = next(iter(feeds.values()))
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.calls.append((len(x), threading.current_thread().name))
        time.sleep(self.pause)
        with self.lock:
            self.running -= 1
        return [x.sum(axis=(2, 3))]


def test_onnx_model_equals_the_torch_forward_at_any_batch_and_size(bundle_source):
    model, _ = bundle_source[1][0][0][0]
    session = onnx_session(onnx_bytes(model), threads=2)
    torch.manual_seed(0)
    for batch, size in ((1, 48), (3, 72), (2, 64), (2 * PIECE_ROWS + 3, 48)):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(x.numpy())
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the L2-normalised embedding


@pytest.mark.parametrize("rows, workers, pieces", [(1, 2, [1]), (2, 2, [1, 1]), (3, 2, [2, 1]),
                                                   (2 * PIECE_ROWS + 1, 2, [6, 6, 5]),
                                                   (5, 1, [5])])
def test_a_batch_runs_in_pieces_with_its_rows_in_order(rows, workers, pieces):
    fake = RowSums()
    x = np.arange(rows * 3 * 2 * 2, dtype=np.float32).reshape(rows, 3, 2, 2)
    got = ParallelSession(fake, workers).run(x)
    np.testing.assert_array_equal(got, x.sum(axis=(2, 3)))
    assert sorted(n for n, _ in fake.calls) == sorted(pieces)


def test_the_pieces_run_at_once_on_the_pool_threads():
    fake = RowSums(pause=0.2)
    start = time.perf_counter()
    ParallelSession(fake, 2).run(np.zeros((2, 3, 4, 4), np.float32))
    assert fake.most == 2 and time.perf_counter() - start < 0.35  # two 0.2 s runs side by side
    assert all(name.startswith("onnx") for _, name in fake.calls)


def test_flip_tta_sums_the_image_and_its_mirror_then_normalises():
    fake = ParallelSession(type("Cols", (), {"run": lambda self, o, f: [next(iter(f.values()))[:, 0, 0, :]]})(), 2)
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)  # output: the first row of channel 0
    want = l2_normalise(x[:, 0, 0, :] + x[:, 0, 0, ::-1])
    np.testing.assert_allclose(embed_views(fake, x, True), want, rtol=1e-6)
    np.testing.assert_allclose(embed_views(fake, x, False), l2_normalise(x[:, 0, 0, :]), rtol=1e-6)


def test_a_file_that_is_not_a_model_is_refused_naming_it(tmp_path):
    bad = tmp_path / "fold0_member0.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match=r"fold0_member0\.onnx: not a loadable ONNX model"):
        onnx_session(bad)


def test_a_forked_child_runs_in_pieces_on_its_own_pool():
    import os

    session = ParallelSession(RowSums(), 2)
    x = np.ones((2, 3, 2, 2), np.float32)
    session.run(x)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child: the inherited pool has no threads; a run must not wait on them
        os._exit(0 if np.array_equal(session.run(x), x.sum(axis=(2, 3))) else 1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's run hung on its parent's pool")
