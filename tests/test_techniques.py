"""The training and extraction techniques: multi-scale TTA and P x K batches, each on numbers
worked out by hand or a naive version."""
import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.data.loaders import PKSampler
from retrieval.embed.feature_file import l2_normalise
from retrieval.embed.tta import embed_images, embed_tta, tta_sizes
from retrieval.io import InputError


# -- multi-scale TTA ---------------------------------------------------------------------------

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
    one, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0], flip_tta=True, **run)
    plain, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=True, **run)
    np.testing.assert_allclose(one, plain, atol=1e-6)  # one scale: the same (renormalised) embeddings
    two, _ = embed_tta(m, meta, tmp_path, images, 48, [1.0, 1.5], flip_tta=False, **run)
    a, _ = embed_images(m, meta, tmp_path, images, 48, flip_tta=False, **run)
    b, _ = embed_images(m, meta, tmp_path, images, 72, flip_tta=False, **run)
    naive = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(two, naive, atol=1e-6)
    np.testing.assert_array_equal(two, l2_normalise(a + b))  # one decoding per image: the same bits
    assert not np.allclose(two, a, atol=1e-3)  # the second scale did change something


# -- P x K batches -----------------------------------------------------------------------------

def test_pk_sampler_batches_hold_p_classes_of_k_images():
    labels = np.repeat(np.arange(6), [5, 5, 5, 5, 3, 1])  # one class below K: drawn with replacement
    s = PKSampler(labels, m=2, batch_size=6, length=24, seed=0)
    s.set_epoch(1)
    idx = list(iter(s))
    assert len(idx) == len(s) == 24
    for b in range(0, 24, 6):
        batch = labels[idx[b:b + 6]]
        classes, counts = np.unique(batch, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all(), batch


def test_pk_sampler_is_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(8), 4)
    s = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)
    s.set_epoch(2)
    first = list(iter(s))
    s.set_epoch(3)
    list(iter(s))
    np.random.seed(123)  # the global numpy state plays no part
    s.set_epoch(2)
    assert list(iter(s)) == first  # not an order left over from epoch 3
    fresh = PKSampler(labels, m=4, batch_size=8, length=32, seed=5)  # as after a resume
    fresh.set_epoch(2)
    assert list(iter(fresh)) == first
    s.set_epoch(4)
    assert list(iter(s)) != first


def test_pk_sampler_refuses_a_batch_it_cannot_fill():
    with pytest.raises(InputError, match="2 classes x train.m_per_class 4 cannot fill a batch of 16"):
        PKSampler(np.repeat([0, 1], 10), m=4, batch_size=16, length=20, seed=0)
