"""Bad input: each case gives a clear message naming the file, or a counted, logged skip."""
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from retrieval.data.images import check_images, drop_undecodable, load_image, scan_test, scan_train
from retrieval.io import InputError


def jpeg_bytes(color=(200, 30, 30), size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def make_layout(root: Path, classes=("a", "b", "c", "d"), per_class=4) -> None:
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            (root / "train" / c / f"{c}{i}.jpg").write_bytes(jpeg_bytes((40 * i, 60, 100)))
    for which, prefix in (("query", "q"), ("reference", "r")):
        (root / "test" / which).mkdir(parents=True)
        for i in range(3):
            (root / "test" / which / f"{prefix}{i}.jpg").write_bytes(jpeg_bytes((90, 30 * i, 10)))


# -- undecodable files ----------------------------------------------------------------------

@pytest.mark.parametrize("name,content,needle", [
    ("truncated.jpg", jpeg_bytes(size=(64, 64))[:200], "cannot decode"),
    ("empty.jpg", b"", "cannot decode"),
    ("text.jpg", b"this is not an image\n", "cannot decode"),
])
def test_undecodable_file_is_a_clear_error(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=needle) as err:
        load_image(tmp_path / name)
    assert name in str(err.value)


def test_hidden_and_non_image_files_are_skipped(tmp_path, caplog):
    make_layout(tmp_path)
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "train" / "a" / "Thumbs.db").write_bytes(b"\0\1")
    (tmp_path / "train" / "a" / "notes.txt").write_text("hello")
    (tmp_path / "test" / "query" / "README").write_text("no extension")
    with caplog.at_level(logging.WARNING):
        train = scan_train(tmp_path)
        query = scan_test(tmp_path, "query")
    assert len(train) == 16 and len(query) == 3
    assert "notes.txt" in caplog.text and "README" in caplog.text


# -- decodable but unusual images ----------------------------------------------------------

def test_png_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (255, 0, 0, 255))
    im.save(tmp_path / "a.png")
    arr = load_image(tmp_path / "a.png")
    assert arr.shape == (4, 4, 3) and arr.dtype == np.uint8
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[1, 1]) == (255, 255, 255)


def test_palette_grayscale_and_cmyk(tmp_path):
    Image.new("RGB", (5, 5), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.new("L", (5, 5), 77).save(tmp_path / "g.jpg")
    Image.new("CMYK", (5, 5), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # red in CMYK
    assert tuple(load_image(tmp_path / "p.png")[2, 2]) == (10, 200, 30)
    assert tuple(load_image(tmp_path / "g.jpg")[2, 2]) == (77, 77, 77)
    r, g, b = load_image(tmp_path / "c.jpg")[2, 2].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)  # 32896 / 257 = 128
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = load_image(tmp_path / "anim.gif")[3, 3].astype(int)
    assert r > 200 and b < 60


def test_exif_orientation_is_honoured(tmp_path):
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 10))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (20, 10, 3)  # width and height swapped
    assert out[:8].mean() > 200 and out[12:].mean() < 50  # the white half is now on top


def test_one_pixel_image_goes_through_the_transforms(tmp_path):
    from retrieval.data.loaders import eval_transform, train_transform
    Image.new("RGB", (1, 1), (5, 6, 7)).save(tmp_path / "dot.png")
    img = load_image(tmp_path / "dot.png")
    assert eval_transform(32, [0.5] * 3, [0.5] * 3)(image=img)["image"].shape == (3, 32, 32)
    assert train_transform(32, [0.5] * 3, [0.5] * 3, seed=0)(image=img)["image"].shape == (3, 32, 32)


def test_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100 x 100 = 10,000 > 2 x 1,000
    with pytest.raises(InputError, match="bomb.png: refused, beyond Pillow's decompression-bomb limit"):
        load_image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 8000)  # between 1x and 2x: Pillow only warns
    with pytest.raises(InputError, match="decompression-bomb"):
        load_image(tmp_path / "bomb.png")


# -- names and ids ---------------------------------------------------------------------------

def test_non_ascii_spaces_and_quotes_in_training_names(tmp_path):
    from retrieval.data.folds import make_folds
    for c in ("신라면 컵", "l'œuf \"bio\"", "plain"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "train" / c / f"사진 {i}'.jpg").write_bytes(jpeg_bytes())
    train = scan_train(tmp_path)
    folds = make_folds(drop_undecodable(train, tmp_path)[0], 3, 0.45, seed=0)
    folds.to_csv(tmp_path / "folds.csv", index=False)
    back = pd.read_csv(tmp_path / "folds.csv", dtype=str)
    assert set(back["label"]) == {"신라면 컵", "l'œuf \"bio\"", "plain"}
    assert all((tmp_path / p).is_file() for p in back["image"])


@pytest.mark.parametrize("name", ["a b.jpg", "a,b.jpg", 'a"b.jpg'])
def test_test_id_a_submission_cannot_hold_is_refused(tmp_path, name):
    make_layout(tmp_path)
    (tmp_path / "test" / "query" / name).write_bytes(jpeg_bytes())
    with pytest.raises(InputError, match="rename the file"):
        scan_test(tmp_path, "query")


def test_non_ascii_test_ids_are_fine(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "test" / "query" / "질의1.jpg").write_bytes(jpeg_bytes())
    assert "질의1" in scan_test(tmp_path, "query")["id"].tolist()


def test_two_files_with_one_id(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "test" / "reference" / "r0.png").write_bytes(b"")
    with pytest.raises(InputError, match="share the id 'r0': r0.jpg and r0.png"):
        scan_test(tmp_path, "reference")
    (tmp_path / "train" / "b" / "a0.jpg").write_bytes(jpeg_bytes())  # a file name of class a: fine
    assert {"a/a0", "b/a0"} <= set(scan_train(tmp_path)["id"])
    (tmp_path / "train" / "b" / "a0.png").write_bytes(jpeg_bytes())  # two a0 files in one class
    with pytest.raises(InputError, match="share the id 'a0': a0.jpg and a0.png"):
        scan_train(tmp_path)


def test_query_id_equal_to_a_reference_id_is_allowed(tmp_path):
    from retrieval.results.submission import read_submission, write_submission
    write_submission(tmp_path / "s.csv", {"x1": ["x1", "r2"]}, ["x1"], ["x1", "r2"])
    assert read_submission(tmp_path / "s.csv") == {"x1": ["x1", "r2"]}


# -- folders ---------------------------------------------------------------------------------

def test_empty_class_folder_is_skipped_and_logged(tmp_path, caplog):
    make_layout(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        train = scan_train(tmp_path)
    assert "empty" not in set(train["label"]) and "empty class folder" in caplog.text


@pytest.mark.parametrize("missing,needle", [("test/query", "no test/query/ folder"),
                                            ("test/reference", "no test/reference/ folder")])
def test_missing_test_folder(tmp_path, missing, needle):
    import shutil
    make_layout(tmp_path)
    shutil.rmtree(tmp_path / missing)
    with pytest.raises(InputError, match=needle):
        scan_test(tmp_path, missing.split("/")[1])


def test_empty_input_directory(tmp_path):
    with pytest.raises(InputError, match="no train/ folder"):
        scan_train(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(InputError, match="no images found"):
        scan_train(tmp_path)


# -- the policy in the stages -------------------------------------------------------------------

def test_split_skips_undecodable_training_images_and_counts_them(tmp_path, monkeypatch, caplog):
    make_layout(tmp_path / "data")
    (tmp_path / "data" / "train" / "b" / "broken.jpg").write_bytes(jpeg_bytes()[:100])
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"data": {"root": "data"}, "cv": {"n_folds": 2, "folds": [0, 1]}}))
    from stages import split
    with caplog.at_level(logging.WARNING):
        assert split.main(["--out", "folds.csv", "--metrics", "m.json"]) == 0
    assert json.loads(Path("m.json").read_text())["skipped_images"] == 1
    assert "b/broken" not in set(pd.read_csv("folds.csv")["id"])
    assert "train/b/broken.jpg" in caplog.text and len(pd.read_csv("folds.csv")) == 16


def test_check_images_in_parallel_matches_serial(tmp_path):
    make_layout(tmp_path, classes=[f"c{i}" for i in range(20)], per_class=4)  # 80 images: parallel path
    (tmp_path / "train" / "c3" / "c30.jpg").write_bytes(b"junk")
    images = scan_train(tmp_path)["image"].tolist()
    bad = check_images(tmp_path, images)
    assert list(bad) == ["train/c3/c30.jpg"]
    assert check_images(tmp_path, images[:10]) == {}


def tiny_extract_setup(tmp_path: Path, bad_query: str):
    """A layout with one corrupt query, an untrained tiny checkpoint and a folds table."""
    import torch
    from retrieval.config import ModelParams
    from retrieval.data.folds import make_folds
    from retrieval.model.checkpoints import save_members
    from retrieval.model.network import build_model

    make_layout(tmp_path / "data")
    (tmp_path / "data" / "test" / "query" / "q1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    torch.manual_seed(0)
    model, meta = build_model(ModelParams(embedding_dim=8), pretrained="none")
    save_members(tmp_path / "model.pt", [(model.state_dict(), meta)])
    make_folds(scan_train(tmp_path / "data"), 2, 0.45, 0).to_csv(tmp_path / "folds.csv", index=False)
    params = {"data": {"root": "data"}, "cv": {"n_folds": 2, "folds": [0, 1]},
              "extract": {"image_size": 32, "num_workers": 0, "bad_query": bad_query,
                          "scales": [1.0], "whiten_dim": 0}}  # raw embeddings of the 8-d model
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--fold", "0", "--model", "model.pt", "--folds", "folds.csv", "--query", "q.npz",
            "--reference", "r.npz", "--valid", "v.npz", "--whitening", "w.npz", "--metrics", "m.json"]


def test_undecodable_query_is_an_error_by_default(tmp_path, monkeypatch, capsys):
    args = tiny_extract_setup(tmp_path, "error")
    monkeypatch.chdir(tmp_path)
    from stages import extract
    assert extract.main(args) == 2
    err = capsys.readouterr().err
    assert "q1.jpg" in err and "bad_query: empty" in err and "Traceback" not in err
    assert not Path("q.npz").exists()


def test_undecodable_query_can_get_an_empty_ranking(tmp_path, monkeypatch):
    args = tiny_extract_setup(tmp_path, "empty")
    monkeypatch.chdir(tmp_path)
    from stages import ensemble, extract, rerank
    from retrieval.results.submission import read_submission
    assert extract.main(args) == 0
    assert json.loads(Path("m.json").read_text())["empty_queries"] == 1
    assert rerank.main(["--query", "q.npz", "--reference", "r.npz", "--valid", "v.npz",
                        "--ranking", "rk0.npz", "--metrics", "rm0.json", "--ablation", "ra0.csv",
                        "--valid-ap", "va0.csv", "--valid-ranking", "vr0.npz"]) == 0
    for name in ("rk{}.npz", "rm{}.json", "va{}.csv"):
        Path(name.format(1)).write_bytes(Path(name.format(0)).read_bytes())
    assert ensemble.main(["--rankings", "rk{fold}.npz", "--rerank-metrics", "rm{fold}.json",
                          "--valid-ap", "va{fold}.csv", "--submission", "sub.csv", "--metrics", "em.json",
                          "--pooled-ap", "pooled.csv"]) == 0
    sub = read_submission("sub.csv")
    assert sub["q1"] == [] and sorted(sub["q0"]) == ["r0", "r1", "r2"]
    assert json.loads(Path("em.json").read_text())["empty_rankings"] == 1


# -- damaged files the stages read: one line naming the file, exit 2 (issue 15) ----------------

def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def extracted(module_tmp):
    """A folder holding a tiny layout, a model.pt and its extract outputs (q, r, v, w .npz)."""
    import os
    folder = module_tmp
    args = tiny_extract_setup(folder, "empty")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        from stages import extract
        assert extract.main(args) == 0
    finally:
        os.chdir(cwd)
    return folder, args


@pytest.fixture
def work(extracted, tmp_path, monkeypatch):
    """A private copy of :func:`extracted`, as the working directory; the extract arguments."""
    import shutil
    folder, args = extracted
    shutil.copytree(folder, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    return args


SEARCH_FILES = ["--models", "model.pt", "--references", "r.npz", "--whitening", "w.npz"]


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("damage", ["empty", "truncated", "text"])
@pytest.mark.parametrize("reader", ["extract", "search"])
def test_corrupt_model_file_is_one_line(work, capsys, damage, reader):
    model = Path("model.pt")
    {"empty": lambda: model.write_bytes(b""), "truncated": lambda: truncated(model),
     "text": lambda: model.write_text("not a checkpoint\n")}[damage]()
    from stages import extract, search
    rc = extract.main(work) if reader == "extract" else search.main(["data/test/query/q0.jpg", *SEARCH_FILES])
    assert rc == 2
    one_line_error(capsys, "model.pt: not a readable checkpoint", "re-run the train stage")


def test_checkpoint_whose_weights_do_not_fit_is_one_line(work, capsys):
    import torch
    ckpt = torch.load("model.pt", weights_only=False)
    ckpt["meta"]["embedding_dim"] = 9  # the neck's weights are 8-d
    torch.save(ckpt, "model.pt")
    from stages import extract
    assert extract.main(work) == 2
    one_line_error(capsys, "model.pt: its weights do not rebuild the model it describes")


@pytest.mark.parametrize("name", ["q.npz", "v.npz"])
def test_truncated_feature_file_is_one_line(work, capsys, name):
    truncated(Path(name))
    from stages import rerank
    assert rerank.main(["--query", "q.npz", "--reference", "r.npz", "--valid", "v.npz", "--ranking", "rk.npz",
                        "--metrics", "rm.json", "--ablation", "ra.csv", "--valid-ap", "rv.csv",
                        "--valid-ranking", "vr.npz"]) == 2
    one_line_error(capsys, f"{name}: not a readable feature file", "re-run the extract stage")


def test_truncated_whitening_file_is_one_line(work, capsys):
    truncated(Path("w.npz"))
    from stages import search
    assert search.main(["data/test/query/q0.jpg", *SEARCH_FILES]) == 2
    one_line_error(capsys, "w.npz: not a whitening file")


def test_truncated_ranking_file_is_one_line(tmp_path, monkeypatch, capsys):
    from retrieval.rank.ranking_file import save_ranking
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"cv": {"n_folds": 2, "folds": [0, 1]}}))
    for f in (0, 1):
        save_ranking(f"rk{f}.npz", np.array(["q"]), np.array(["r0", "r1"]), np.ones((1, 2)), np.array([[0, 1]]),
                     {"features": "f"})
    truncated(Path("rk1.npz"))
    from stages import ensemble
    assert ensemble.main(["--rankings", "rk{fold}.npz", "--rerank-metrics", "rm{fold}.json",
                          "--valid-ap", "va{fold}.csv", "--pooled-ap", "va.csv",
                          "--submission", "s.csv", "--metrics", "m.json"]) == 2
    one_line_error(capsys, "rk1.npz: not a readable ranking file", "re-run the rerank stage")


# -- models, features and data that disagree (issue 31, items 4 and 5) ---------------------------

def retrained(seed: int = 1) -> None:
    """model.pt replaced by another model of the same shape: fold 0 retrained, extract not re-run."""
    import torch
    from retrieval.config import ModelParams
    from retrieval.model.checkpoints import save_members
    from retrieval.model.network import build_model
    torch.manual_seed(seed)
    model, meta = build_model(ModelParams(embedding_dim=8), pretrained="none")
    save_members("model.pt", [(model.state_dict(), meta)])


def test_search_refuses_a_model_that_did_not_make_the_references(work, capsys):
    from stages import search
    assert search.main(["data/test/query/q0.jpg", *SEARCH_FILES]) == 0  # the model that made r.npz
    capsys.readouterr()
    retrained()
    assert search.main(["data/test/query/q0.jpg", *SEARCH_FILES]) == 2
    one_line_error(capsys, "model.pt is not the model that made r.npz", "retrained since? re-run extract",
                   "dvc repro -s extract@0")


def test_search_refuses_reference_features_of_an_older_version(work, capsys):
    with np.load("r.npz") as z:
        old = {k: z[k] for k in z.files}
    old["meta"] = np.array(json.dumps({"fold": 0, "image_size": 32, "flip_tta": True}))  # no fingerprint
    np.savez("r.npz", **old)
    from stages import search
    assert search.main(["data/test/query/q0.jpg", *SEARCH_FILES]) == 2
    one_line_error(capsys, "r.npz: written by an older version", "re-run extract")


RERANK_ARGS = ["--query", "q.npz", "--reference", "r.npz", "--valid", "v.npz", "--ranking", "rk0.npz",
               "--metrics", "rm0.json", "--ablation", "ra0.csv", "--valid-ap", "va0.csv", "--valid-ranking", "vr0.npz"]


def made_by_another_model(path: str) -> None:
    from retrieval.embed.feature_file import load_features, save_features
    f = load_features(path)
    f.meta["model_fingerprint"] = "another model"
    save_features(path, f)


@pytest.mark.parametrize("name", ["r.npz", "v.npz"])
def test_rerank_refuses_feature_files_of_another_model(work, capsys, name):
    made_by_another_model(name)
    from stages import rerank
    assert rerank.main(RERANK_ARGS) == 2
    one_line_error(capsys, f"{name} was made by another model than q.npz", "re-run extract")
    assert not Path("rk0.npz").exists()


def report_args() -> list[str]:
    """The report's flags, on fold 0 alone; the run section's files (histories, metrics) absent:
    the refusals come before they are read."""
    from retrieval.results.summary import BEFORE_REPORT
    Path("params.yaml").write_text(yaml.safe_dump({**yaml.safe_load(Path("params.yaml").read_text()),
                                                   "cv": {"n_folds": 2, "folds": [0]}}))
    return ["--valid", "v.npz", "--valid-ranking", "vr{fold}.npz", "--folds", "folds.csv", "--submission", "sub.csv",
            "--out", "report", "--history", "h{fold}.csv", "--ablation", "ra{fold}.csv",
            *[a for s in BEFORE_REPORT for a in (f"--{s}-metrics", f"absent_{s}.json")]]


def test_report_refuses_a_validation_ranking_of_other_features(work, capsys):
    args = report_args()
    from stages import report, rerank
    assert rerank.main(RERANK_ARGS) == 0
    made_by_another_model("v.npz")  # extract re-run, rerank not
    assert report.main(args) == 2
    one_line_error(capsys, "vr0.npz ranks other features than v.npz", "re-run rerank")


def test_ensemble_refuses_rankings_of_features_made_from_other_data(tmp_path, monkeypatch, capsys):
    from retrieval.rank.ranking_file import save_ranking
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"cv": {"n_folds": 2, "folds": [0, 1]}}))
    for f, data in ((0, "listing-a"), (1, "listing-b")):  # fold 1 extracted after a reference was added
        save_ranking(f"rk{f}.npz", np.array(["q"]), np.array(["r0", "r1"]), np.ones((1, 2)), np.array([[0, 1]]),
                     {"features": f"fold{f}", "data_listing": data})
    from stages import ensemble
    assert ensemble.main(["--rankings", "rk{fold}.npz", "--rerank-metrics", "rm{fold}.json",
                          "--valid-ap", "va{fold}.csv", "--pooled-ap", "va.csv",
                          "--submission", "s.csv", "--metrics", "m.json"]) == 2
    one_line_error(capsys, "rk1.npz ranks features made from other data than rk0.npz", "re-run extract and rerank")


def test_extract_refuses_data_changed_while_it_ran(work, capsys, monkeypatch):
    from stages import extract
    real = extract.extract_fold

    def adding_a_reference(*args, **kwargs):  # a reference copied in while the stage embeds
        Path("data/test/reference/r9.jpg").write_bytes(Path("data/test/reference/r0.jpg").read_bytes())
        return real(*args, **kwargs)
    monkeypatch.setattr(extract, "extract_fold", adding_a_reference)
    before = Path("q.npz").read_bytes()
    assert extract.main(work) == 2
    one_line_error(capsys, "data/test/reference changed while extract ran (1 file added); run again")
    assert Path("q.npz").read_bytes() == before  # nothing written


def test_extract_records_the_data_it_read_and_report_refuses_other_data(work, capsys):
    from retrieval.data.images import data_listing, listing_digest
    from retrieval.embed.feature_file import load_feature_meta
    assert load_feature_meta("v.npz")["data_listing"] == listing_digest(data_listing("data", ("train", "test")))
    from stages import report
    from retrieval.rank.ranking_file import save_ranking
    args = report_args()
    meta = load_feature_meta("v.npz")
    save_ranking("vr0.npz", np.array(["x"]), np.array(["y"]), np.ones((1, 1)), np.zeros((1, 1)),
                 {"features": meta["fingerprint"], "data_listing": meta["data_listing"]})
    Path("data/test/reference/r1.jpg").unlink()  # data changed after extract ran
    assert report.main(args) == 2
    one_line_error(capsys, "v.npz was made from other data than data.root holds now", "re-run extract")


def test_data_change_message_names_the_folder_and_counts(tmp_path):
    from retrieval.data.images import data_unchanged
    make_layout(tmp_path / "data")
    with pytest.raises(InputError) as err:
        with data_unchanged(tmp_path / "data", "train", ("train",)) as digest:
            (tmp_path / "data/train/a/a0.jpg").unlink()
            (tmp_path / "data/train/b/b0.jpg").write_bytes(b"other bytes")
            (tmp_path / "data/test/query/q9.jpg").write_bytes(b"x")  # not a part train reads
    assert str(err.value) == f"{tmp_path}/data/train changed while train ran (1 file removed, 1 file changed); run again"
    assert len(digest) == 64
    with pytest.raises(InputError, match=r"data/train/c changed while split ran \(1 file changed\); run again"):
        with data_unchanged(tmp_path / "data", "split", ("train",)):
            (tmp_path / "data/train/c/c0.jpg").write_bytes(jpeg_bytes((1, 2, 3), size=(20, 12)))  # same name
    with data_unchanged(tmp_path / "data", "train", ("train",)):  # nothing changed: nothing raised
        pass


@pytest.mark.parametrize("pretrained", ["none", "pypi"])
def test_unknown_backbone_name_is_named_with_the_closest(pretrained):
    from retrieval.config import ModelParams
    from retrieval.model.network import build_model
    with pytest.raises(InputError, match=r"model.backbone: 'tf_efficientnet_lit0' is not a timm model name; "
                                         r"closest: tf_efficientnet_lite0"):
        build_model(ModelParams(backbone="tf_efficientnet_lit0", embedding_dim=8), pretrained=pretrained)


# -- the search command treats a folder as the pipeline does ----------------------------------

def search_folder(root: Path) -> Path:
    folder = root / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg_bytes((200, 30, 30)))
    (folder / "b.png").write_bytes(jpeg_bytes((30, 200, 30)))
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "dir.jpg").mkdir()  # a folder with an image's name
    return folder


def test_search_refuses_an_undecodable_image_by_default(work, capsys):
    search_folder(Path("."))
    from stages import search
    assert search.main(["photos", *SEARCH_FILES]) == 2
    one_line_error(capsys, "1 undecodable image(s)", "photos/bad.jpg", "--bad-images skip")


def test_search_skips_bad_images_and_non_files_when_asked(work, capsys, caplog):
    search_folder(Path("."))
    from stages import search
    with caplog.at_level(logging.WARNING):
        assert search.main(["photos", "--json", "--top", "2", "--bad-images", "skip", *SEARCH_FILES]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in found) == ["a.jpg", "b.png"]
    assert all(len(hits) == 2 for hits in found.values())
    assert "1 entries skipped, not files, e.g. photos/dir.jpg" in caplog.text
    assert "bad.jpg" in caplog.text and "1 of 3 images skipped as undecodable" in caplog.text


# -- scoring: the truth's faults are the truth's -------------------------------------------------

def score_setup(root: Path, query_ids=("q1", "q2")) -> None:
    from retrieval.results.submission import write_submission
    (root / "truth").mkdir()
    pd.DataFrame({"id": list(query_ids), "label": ["a", "b"]}).to_csv(root / "truth" / "query.csv", index=False)
    pd.DataFrame({"id": ["r1", "r2"], "label": ["a", "b"]}).to_csv(root / "truth" / "reference.csv", index=False)
    write_submission(root / "sub.csv", {"q1": ["r1", "r2"], "q2": ["r2", "r1"]}, ["q1", "q2"], ["r1", "r2"])


def test_score_names_a_space_padded_truth_id_as_the_truth_files_fault(tmp_path, capsys):
    score_setup(tmp_path, query_ids=("q1", " q2"))
    from stages import score
    assert score.main(["--submission", str(tmp_path / "sub.csv"), "--truth", str(tmp_path / "truth")]) == 2
    one_line_error(capsys, "query.csv: row 3: id ' q2' has surrounding spaces", "fix the truth file")


def test_score_refuses_a_file_as_truth_directory(tmp_path, capsys):
    score_setup(tmp_path)
    from stages import score
    assert score.main(["--submission", str(tmp_path / "sub.csv"), "--truth", str(tmp_path / "truth" / "query.csv")]) == 2
    one_line_error(capsys, "query.csv: not a directory")
