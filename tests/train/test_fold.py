"""train_fold: the checkpoint and history of a fold written at the end, each backbone's history
merged on the epoch, the finished resume states removed."""
import pandas as pd
import torch

from retrieval.config import parse_params
from retrieval.model.network import build_model
from retrieval.train.epochs import MemberResult
from retrieval.train.fold import _member_dir, _merged_history, _remove_states, train_fold


def test_epochs_zero_keeps_the_pretrained_model(tiny, folds, tmp_path):
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 0}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["best_epoch"] == 0 and metrics["training_helped"] is False
    assert pd.read_csv(tmp_path / "h.csv")["epoch"].tolist() == [0]
    torch.manual_seed(p.seed + 0)  # train_fold seeds with seed + fold before building the model
    fresh, _ = build_model(p.model)
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())


def test_merged_history_suffixes_every_other_backbones_columns():
    def result(losses):
        return MemberResult({}, {}, pd.DataFrame({"epoch": range(len(losses)), "train_loss": losses}), {})
    merged = _merged_history(["a", "b", "c"], [result([1.0, 2.0]), result([3.0, 4.0]), result([5.0])])
    assert list(merged.columns) == ["epoch", "train_loss", "train_loss/b", "train_loss/c"]
    assert merged["train_loss/b"].tolist() == [3.0, 4.0]
    assert merged["train_loss/c"].tolist()[0] == 5.0 and pd.isna(merged["train_loss/c"].iloc[1])


def test_member_dirs_and_their_removal(tmp_path):
    top = tmp_path / "ckpt"
    assert _member_dir(None, "a", 2) is None and _member_dir(top, "a", 1) == top and _member_dir(top, "a", 2) == top / "a"
    paths = [_member_dir(top, b, 2) / "last.pt" for b in ("a", "b")]
    for path in paths:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"state")
    (top / "b" / "other").write_text("not ours")
    _remove_states(paths, top)
    assert not paths[0].exists() and not (top / "a").exists()  # its state, then its empty folder
    assert not paths[1].exists() and (top / "b" / "other").exists()  # a folder that is not empty stays
    _remove_states([None], None)  # no resume folder: nothing to do
