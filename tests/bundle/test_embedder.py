"""A fold's embedding in numpy and ONNX Runtime, checked against a naive loop with stand-in
sessions: each size's image plus mirror, the sizes summed, whitened, the members fused by weight;
batches, and the eval input made once for all the folds."""
import cv2
import numpy as np
import pytest

from retrieval.bundle import embedder
from retrieval.bundle.embedder import FoldModel, Member, embed_folds
from retrieval.bundle.onnx_model import ParallelSession

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


class Linear:
    """A stand-in ORT session: each image's pixels (its top-left 4 x 4, by channel) times a fixed matrix."""

    def __init__(self, seed: int, dim: int = 6):
        self.w = np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x[:, :, :4, :4].reshape(len(x), -1) @ self.w

    def run(self, outputs, feeds):
        return [self.forward(next(iter(feeds.values())))]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def naive(image: np.ndarray, nets: list[Linear], whitenings: list, weights: list[float], sizes, flip: bool) -> np.ndarray:
    """One image's fold embedding, written out step by step."""
    blocks = []
    for net, w in zip(nets, whitenings):
        total = 0
        for size in sizes:
            x = (cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR) / 255.0 - MEAN) / STD
            x = x.transpose(2, 0, 1)[None].astype(np.float32)
            e = net.forward(x)[0] + (net.forward(x[..., ::-1].copy())[0] if flip else 0)
            total = total + unit(e)
        e = unit(total)
        if w is not None:
            e = unit((e - w[0]) @ w[1])
        blocks.append(e)
    return np.concatenate([b * np.sqrt(wt / sum(weights)) for b, wt in zip(blocks, weights)])


@pytest.fixture
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (rng.integers(9, 30), rng.integers(9, 30), 3), dtype=np.uint8) for _ in range(5)]


@pytest.mark.parametrize("flip", [True, False])
def test_a_fold_embeds_as_the_naive_loop(images, flip):
    rng = np.random.default_rng(2)
    nets, whitenings = [Linear(0), Linear(1)], [None, (rng.standard_normal(6).astype(np.float32),
                                                       rng.standard_normal((6, 4)).astype(np.float32))]
    members = [Member(ParallelSession(n, 2), MEAN, STD, w) for n, w in zip(nets, whitenings)]
    fold = FoldModel(members, [1.0, 3.0], [8, 12], flip, batch_size=2)  # batches of 2, 2 and 1
    got = fold.embed(images)
    want = np.stack([naive(im, nets, whitenings, [1.0, 3.0], [8, 12], flip) for im in images])
    assert got.shape == (5, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_folds_share_each_eval_input_and_keep_their_own_models(images, monkeypatch):
    made = []
    real = embedder.eval_input
    monkeypatch.setattr(embedder, "eval_input", lambda ims, size, mean, std: made.append(size) or real(ims, size, mean, std))
    folds = {f: FoldModel([Member(ParallelSession(Linear(f), 2), MEAN, STD, None)], [1.0], [8, 12], True, batch_size=4)
             for f in (0, 1, 2)}
    got = embed_folds(folds, images)
    assert sorted(made) == [8, 8, 12, 12]  # two batches (4 + 1 images) x two sizes, for all three folds
    for f in (0, 1, 2):
        np.testing.assert_allclose(got[f], np.stack([naive(im, [Linear(f)], [None], [1.0], [8, 12], True) for im in images]),
                                   atol=1e-5)
    other = FoldModel([Member(ParallelSession(Linear(0), 2), [0.1, 0.1, 0.1], STD, None)], [1.0], [8, 12], True, 4)
    assert not np.allclose(embed_folds({0: folds[0], 1: other}, images)[1], got[0])  # another mean: its own input


def test_no_images_give_an_empty_array():
    fold = FoldModel([Member(ParallelSession(Linear(0), 2), MEAN, STD, None)], [1.0], [8], True, batch_size=32)
    assert fold.embed([]).shape[0] == 0
