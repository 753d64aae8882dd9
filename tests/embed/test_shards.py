"""Sharded, resumable embedding into a memory map (extract.shard_size)."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from retrieval.config import ExtractParams
from retrieval.embed.extract import extract_fold
from retrieval.embed.shards import embed_sharded, fingerprint

IMAGES = [f"img{i:02d}.jpg" for i in range(10)]


def rows_of(names):
    """A deterministic stand-in for a model: row i is (i, i^2, 1) of the image's number."""
    return np.array([[int(n[3:5]), int(n[3:5]) ** 2, 1.0] for n in names], np.float32)


class Counting:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, chunk):
        if len(self.calls) == self.fail_at:
            raise KeyboardInterrupt  # a kill part way through
        self.calls.append(list(chunk))
        return rows_of(chunk)


def test_shards_fill_a_memory_map_in_order(tmp_path):
    f = Counting()
    m = embed_sharded(f, IMAGES, tmp_path / "w", 3, "k")
    assert isinstance(m, np.memmap) and m.shape == (10, 3)
    np.testing.assert_array_equal(m, rows_of(IMAGES))
    assert [len(c) for c in f.calls] == [3, 3, 3, 1]
    assert json.loads((tmp_path / "w/progress.json").read_text()) == {"shards": 4, "of": 4}


def test_a_killed_run_continues_from_the_last_finished_shard(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        embed_sharded(Counting(fail_at=2), IMAGES, tmp_path / "w", 3, "k")
    assert json.loads((tmp_path / "w/progress.json").read_text())["shards"] == 2
    again = Counting()
    m = embed_sharded(again, IMAGES, tmp_path / "w", 3, "k")
    assert again.calls == [IMAGES[6:9], IMAGES[9:]]  # shards 0 and 1 were not embedded again
    np.testing.assert_array_equal(m, rows_of(IMAGES))


def test_work_of_other_images_or_model_is_discarded(tmp_path, caplog):
    embed_sharded(Counting(), IMAGES, tmp_path / "w", 3, fingerprint(IMAGES, model="a"))
    f = Counting()
    embed_sharded(f, IMAGES, tmp_path / "w", 3, fingerprint(IMAGES, model="b"))
    assert len(f.calls) == 4 and "starting afresh" in caplog.text
    assert fingerprint(IMAGES, model="a") != fingerprint(IMAGES[:-1], model="a")
    (tmp_path / "w/progress.json").write_text("garbage")
    f = Counting()
    embed_sharded(f, IMAGES, tmp_path / "w", 3, fingerprint(IMAGES, model="b"))
    assert len(f.calls) == 4 and "unreadable sharded work" in caplog.text
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        embed_sharded(f, IMAGES, tmp_path / "w", 0, "k")


def test_extract_with_shards_equals_extract_in_memory(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    paths = {"train/a": 3, "train/b": 3, "test/query": 2, "test/reference": 3}
    for folder, n in paths.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    folds = pd.DataFrame({"image": [f"train/{c}/{i}.png" for c in "ab" for i in range(3)],
                          "id": [f"{c}/{i}" for c in "ab" for i in range(3)],
                          "label": list("aaabbb"), "fold": ["0"] * 3 + ["1"] * 3,
                          "role": ["query", "reference", "reference"] * 2})
    xp = ExtractParams(image_size=32, batch_size=2, num_workers=0, whiten_dim=4, scales=[1.0, 1.5], amp="off")
    plain, w_plain, _ = extract_fold(xp, str(root), folds, 0, [tiny_model])
    xs = xp.model_copy(update={"shard_size": 2})
    work = tmp_path / "work"
    sharded, w_sharded, _ = extract_fold(xs, str(root), folds, 0, [tiny_model], work)
    for name in ("query", "reference", "valid"):
        np.testing.assert_array_equal(sharded[name].ids, plain[name].ids)
        np.testing.assert_allclose(sharded[name].embeddings, plain[name].embeddings, atol=1e-5)
    np.testing.assert_allclose(w_sharded[0][1], w_plain[0][1], rtol=1e-4, atol=1e-4)
    backbone = tiny_model[1]["backbone"]
    assert json.loads((work / backbone / "reference/progress.json").read_text()) == {"shards": 2, "of": 2}
    assert (work / backbone / "whitening/embeddings.npy").is_file()  # training images for the whitening
