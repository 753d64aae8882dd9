"""Query time: listing and decoding new images, and searching the saved references with them
(the fold models' embeddings ranked and fused as the pipeline does)."""
import logging

import numpy as np
import pytest
from PIL import Image

from retrieval.config import parse_params
from retrieval.embed.feature_file import Features, save_features
from retrieval.embed.query import decodable, list_inputs, search_images
from retrieval.embed.tta import embed_tta
from retrieval.embed.whitening import save_whitening
from retrieval.io import InputError
from retrieval.model.checkpoints import model_fingerprint, save_members

TTA = {"image_size": 32, "scales": [1.0], "flip_tta": False, "amp": "off", "runtime": "torch"}


def picture(path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(path)


def test_list_inputs_takes_files_and_a_folders_images_sorted(tmp_path, caplog):
    for name in ("b.jpg", "a.PNG", ".hidden.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()  # an image's name on a folder: skipped, counted
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.jpg").write_bytes(b"x")  # not recursive
    named = tmp_path / "named.dat"
    named.write_bytes(b"x")  # a file named directly is taken whatever its extension
    with caplog.at_level(logging.WARNING):
        got = list_inputs([tmp_path, named])
    assert got == [tmp_path / "a.PNG", tmp_path / "b.jpg", named]
    assert "1 entries skipped, not files" in caplog.text and "dir.jpg" in caplog.text


def test_list_inputs_refuses_a_missing_path_and_no_images(tmp_path):
    with pytest.raises(InputError, match=r"gone\.jpg: no such file or directory"):
        list_inputs([tmp_path / "gone.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no images found in .*empty"):
        list_inputs([tmp_path / "empty"])


def test_decodable_refuses_or_skips_an_undecodable_image(tmp_path, caplog):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    picture(good, 0)
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match=r"1 undecodable image\(s\); first: .*bad\.jpg.*--bad-images skip"):
        decodable([good, bad], "error")
    with caplog.at_level(logging.WARNING):
        assert decodable([good, bad], "skip") == [good]
    assert "1 of 2 images skipped as undecodable" in caplog.text
    with pytest.raises(InputError, match="no decodable image to search with"):
        decodable([bad], "skip")


@pytest.fixture()
def saved_fold(tiny_model, tmp_path):
    """Fold 0's model, reference features (embedded as extract would) and no-whitening file;
    the references are five pictures, the images searched two of them."""
    model, meta = tiny_model
    for i in range(5):
        picture(tmp_path / f"r{i}.png", i)
    refs = embed_tta(model, meta, tmp_path, [f"r{i}.png" for i in range(5)], TTA["image_size"], TTA["scales"],
                     TTA["flip_tta"], 8, 0, TTA["amp"], runtime=TTA["runtime"])[0]
    save_members(tmp_path / "model0.pt", [(model.state_dict(), meta)])
    save_features(tmp_path / "ref0.npz", Features([f"r{i}" for i in range(5)], refs, meta={
        **TTA, "fold": 0, "member_weights": [1.0], "model_fingerprint": model_fingerprint([(model, meta)])}))
    save_whitening(tmp_path / "white0.npz", [None], {})
    return tmp_path, refs


def search(root, folds=(0,), top=3):
    params = parse_params({"cv": {"n_folds": 2, "folds": list(folds)}, "extract": {"batch_size": 4},
                           "rerank": {"k": 5, "steps": []}})
    return search_images([root / "r3.png", root / "r1.png"], params, str(root / "model{fold}.pt"),
                         str(root / "ref{fold}.npz"), str(root / "white{fold}.npz"), top)


def test_search_images_is_the_cosine_ranking_of_the_references(saved_fold):
    root, refs = saved_fold
    ids, scores, idx = search(root)
    assert ids.tolist() == ["r0", "r1", "r2", "r3", "r4"]
    cos = refs[[3, 1]] @ refs.T  # the images searched are references 3 and 1 themselves
    naive = np.argsort(-cos, axis=1, kind="stable")
    np.testing.assert_array_equal(idx, naive[:, :3])
    assert idx[:, 0].tolist() == [3, 1]  # each finds itself first
    # one fold: the fused score is the cosine less the lowest of the fold's 5 (rerank.k) listed
    want = np.take_along_axis(cos, naive[:, :3], 1) - cos.min(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, want, atol=1e-5)


def test_search_images_fuses_the_folds(saved_fold):
    root, _ = saved_fold
    for name in ("model", "ref", "white"):
        ext = "pt" if name == "model" else "npz"
        (root / f"{name}1.{ext}").write_bytes((root / f"{name}0.{ext}").read_bytes())
    _, one_s, one_i = search(root)
    _, two_s, two_i = search(root, folds=(0, 1))
    np.testing.assert_array_equal(two_i, one_i)  # the same model twice: the same order
    np.testing.assert_allclose(two_s, 2 * one_s, atol=1e-5)  # and twice the score


def test_search_images_refuses_files_that_do_not_fit(saved_fold):
    root, refs = saved_fold
    save_whitening(root / "white0.npz", [None, None], {})
    with pytest.raises(InputError, match=r"white0\.npz: 2 whitenings for 1 backbones in .*model0\.pt; re-run extract"):
        search(root)
    save_whitening(root / "white0.npz", [(np.zeros(8, np.float32), np.eye(8, 4, dtype=np.float32))], {})
    with pytest.raises(InputError, match=r"ref0\.npz: 8-d references, but the model and whitening give 4-d"):
        search(root)


def test_search_images_refuses_folds_of_other_references(saved_fold):
    root, refs = saved_fold
    for name in ("model", "white"):
        ext = "pt" if name == "model" else "npz"
        (root / f"{name}1.{ext}").write_bytes((root / f"{name}0.{ext}").read_bytes())
    from retrieval.embed.feature_file import load_features
    f = load_features(root / "ref0.npz")
    save_features(root / "ref1.npz", Features(["x0", "r1", "r2", "r3", "r4"], f.embeddings, meta=f.meta))
    with pytest.raises(InputError, match=r"ref1\.npz: reference ids differ between folds"):
        search(root, folds=(0, 1))
