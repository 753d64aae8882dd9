"""Fine-tuning that protects the pretrained features: per-layer learning rates, the head
warm-up schedule, the weight EMA, ``train.epochs: 0`` and the warning when training did not help."""
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval.config import ModelParams, TrainParams, parse_params
from retrieval.model.losses import metric_loss
from retrieval.model.network import backbone_layer_ids, build_model
from retrieval.train import loop as train_mod
from retrieval.train.loop import mix_wins, share_above, train_fold
from retrieval.train.optim import interpolate
from retrieval.train.optim import EMA, PullToStart, group_schedules, param_groups


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model, _ = build_model(ModelParams(embedding_dim=8), pretrained="none")
    return model


def test_backbone_layers_are_stem_then_stages(lite0):
    ids, top = backbone_layer_ids(lite0.backbone)
    assert top == 7  # stem = 0, the 7 stages of EfficientNet-lite = 1..7 (conv_head joins the last)
    assert ids["conv_stem.weight"] == 0 and ids["blocks.0.0.conv_dw.weight"] == 1
    assert ids["blocks.6.0.conv_pw.weight"] == 7 and ids["conv_head.weight"] == 7


def test_param_groups_golden_rates_and_each_parameter_once(lite0):
    tp = TrainParams(lr=1e-3, backbone_lr_scale=0.1, layer_decay=0.5, head_lr=1e-2)
    loss_fn = metric_loss(ModelParams(embedding_dim=8), tp, 5)
    groups = param_groups(lite0, loss_fn, tp)
    backbone = [g for g in groups if g["backbone"]]
    # top stage at lr x 0.1 = 1e-4, each layer below it halved; stem (7 layers down) 1e-4 / 128
    assert [g["lr"] for g in backbone] == pytest.approx([1e-4 * 0.5 ** (7 - i) for i in range(8)])
    assert [g["lr"] for g in groups[-2:]] == [1e-3, 1e-2]  # neck + GeM p, then the head
    ids = [id(p) for g in groups for p in g["params"]]
    expected = [p for p in lite0.parameters()] + list(loss_fn.parameters())
    assert sorted(ids) == sorted(id(p) for p in expected)  # every trainable parameter, once


def test_param_groups_leave_out_frozen_parameters(lite0):
    tp = TrainParams()
    for p in lite0.backbone.conv_stem.parameters():
        p.requires_grad_(False)
    try:
        groups = param_groups(lite0, metric_loss(ModelParams(embedding_dim=8), tp, 5), tp)
        held = {id(p) for g in groups for p in g["params"]}
        assert id(lite0.backbone.conv_stem.weight) not in held
        assert id(lite0.backbone.bn1.weight) in held  # the stem's BatchNorm was not frozen here
    finally:
        for p in lite0.backbone.conv_stem.parameters():
            p.requires_grad_(True)


def test_group_schedules_hold_the_backbone_during_head_warmup():
    groups = [{"backbone": True}, {"backbone": False}]
    backbone, rest = group_schedules(groups, total=10, warmup=2, head_steps=4)
    assert [backbone(s) for s in range(4)] == [0.0] * 4
    assert backbone(4) == pytest.approx(0.5) and backbone(5) == pytest.approx(1.0)  # its own warm-up
    assert backbone(10) == pytest.approx(0.01)  # the same end as the rest
    assert [rest(s) for s in (0, 1, 2)] == pytest.approx([0.5, 1.0, 1.0])
    same, _ = group_schedules(groups, total=10, warmup=2, head_steps=0)
    assert [same(s) for s in range(11)] == [rest(s) for s in range(11)]


def test_ema_golden_with_its_decay_ramp():
    net = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(10.0)
    net.num_batches_tracked.fill_(7)
    ema.update(net)  # decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 10 = 9
    assert ema.state["weight"].item() == pytest.approx(9.0)
    assert ema.state["num_batches_tracked"].item() == 7  # integers are copied, not averaged
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema.update(net)  # decay min(0.5, 2/11) = 2/11: 9 * 2/11
    assert ema.state["weight"].item() == pytest.approx(18 / 11)
    for _ in range(20):
        ema.update(net)  # the ramp passes 0.5 after 8 updates; then halves every step
    assert ema.state["weight"].item() == pytest.approx(18 / 11 * np.prod([min(0.5, (1 + n) / (10 + n)) for n in range(2, 22)]))


@pytest.mark.parametrize("raw,needle", [
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"train": {"epochs": 2, "head_warmup_epochs": 2}}, "train.head_warmup_epochs"),
    ({"train": {"backbone_lr_scale": 0}}, "train.backbone_lr_scale"),
    ({"train": {"layer_decay": 1.5}}, "train.layer_decay"),
    ({"train": {"ema_decay": 1.0}}, "train.ema_decay"),
    ({"train": {"l2sp_decay": -1.0}}, "train.l2sp_decay"),
    ({"train": {"lr": 1e-2, "l2sp_decay": 101.0}}, "train.l2sp_decay"),  # 1.01 of the way: past the start
    ({"train": {"wise_alphas": [0.5, 1.0]}}, "train.wise_alphas"),
    ({"train": {"lr_backoff": 1.0}}, "train.lr_backoff"),
])
def test_bad_recipe_params_are_refused(raw, needle):
    from retrieval.io import InputError
    with pytest.raises(InputError, match=needle.replace(".", r"\.")):
        parse_params(raw)


@pytest.fixture
def tiny(tiny_params):
    return tiny_params({"seed": 1, "train": {"epochs": 2}})


def _tiny_folds(root, n_classes=4, per_class=6):
    from PIL import Image
    rng, rows = np.random.default_rng(0), []
    for c in range(n_classes):
        colour = rng.integers(0, 255, 3)
        for i in range(per_class):
            img = np.clip(colour + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            path = root / f"train/c{c}/{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
            role = "reference" if i % 2 else "query"
            rows.append({"image": f"train/c{c}/{i}.png", "id": f"c{c}_{i}", "label": f"c{c}",
                         "fold": int(c >= 2), "role": role})
    return pd.DataFrame(rows)


def test_epochs_zero_keeps_the_pretrained_model(tiny, tmp_path):
    folds = _tiny_folds(tmp_path)
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 0}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["best_epoch"] == 0 and metrics["training_helped"] is False
    assert pd.read_csv(tmp_path / "h.csv")["epoch"].tolist() == [0]
    torch.manual_seed(p.seed + 0)  # train_fold seeds with seed + fold before building the model
    fresh, _ = build_model(p.model)
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())


def test_warns_when_no_epoch_beats_the_pretrained_model(tiny, tmp_path, monkeypatch, caplog):
    folds = _tiny_folds(tmp_path)
    scores = iter([0.9, 0.5, 0.6])  # epoch 0, 1, 2: training only made it worse
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"map@1000": next(scores), "p@1": 1.0})
    with caplog.at_level(logging.WARNING, logger="retrieval.train"):
        metrics = train_fold(parse_params(tiny), folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["best_epoch"] == 0 and metrics["training_helped"] is False
    assert "training did not help" in caplog.text and "0.9000" in caplog.text


def _validated_states(p, tmp_path, monkeypatch) -> list[dict]:
    """Train fold 0 of the tiny folds with ``p``; the state dict each validation saw, in order
    (each scored above the one before, so the last is the one kept)."""
    folds = _tiny_folds(tmp_path)
    seen = []

    def record(model, *a, **k):
        seen.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})  # model.pt holds CPU tensors
        return {"map@1000": 0.1 * len(seen), "p@1": 1.0}
    monkeypatch.setattr(train_mod, "evaluate", record)
    train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    return seen


def test_head_warmup_leaves_the_backbone_untouched_and_ema_validates(tiny, tmp_path, monkeypatch):
    """One epoch of two with the backbone frozen: after it, backbone weights and BatchNorm
    statistics are the pretrained ones, the neck moved; with an EMA the validated and kept
    weights are the average's."""
    p = parse_params({**tiny, "train": {**tiny["train"], "head_warmup_epochs": 1, "ema_decay": 0.5}})
    start, after_head, end = _validated_states(p, tmp_path, monkeypatch)
    backbone = [k for k in start if k.startswith("backbone.")]
    assert all(torch.equal(after_head[k], start[k]) for k in backbone)  # weights and BN statistics
    assert not torch.equal(after_head["neck.0.weight"], start["neck.0.weight"])
    assert any(not torch.equal(end[k], start[k]) for k in backbone)  # epoch 2 trained it
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], end[k]) for k in end)  # the EMA weights validated are the ones kept
    hist = pd.read_csv(tmp_path / "h.csv")
    # the rate of the next step: 12 training images, batch 8, so 1 step an epoch and no warm-up
    # step (round(0.5)); after the head epoch the backbone starts at lr x lr_factor(0, 1, 0) = lr
    assert hist["backbone_lr"].tolist()[:2] == pytest.approx([0.0, 1e-3])


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_every_batchnorm_statistic_while_the_weights_train(tiny, tmp_path, monkeypatch, freeze_bn):
    """train.freeze_bn: after two epochs every BatchNorm's running statistics, the
    neck's too, are the start's, while weights moved; off, the statistics move with the batches."""
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 2, "freeze_bn": freeze_bn}})
    seen = _validated_states(p, tmp_path, monkeypatch)
    start, end = seen[0], seen[-1]
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert len(stats) > 10 and any(k.startswith("neck.") for k in stats)
    assert all(torch.equal(end[k], start[k]) for k in stats) == freeze_bn
    assert not torch.equal(end["neck.0.weight"], start["neck.0.weight"])


def test_interpolate_golden_and_ends():
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}
    end = {"w": torch.tensor([4.0, 2.0]), "n": torch.tensor(9)}
    mixed = interpolate(start, end, 0.25)
    assert mixed["w"].tolist() == [1.0, 2.0] and mixed["n"].item() == 9
    assert torch.equal(interpolate(start, end, 1.0)["w"], end["w"])


def test_wise_keeps_the_best_mix_of_start_and_last(tiny, tmp_path, monkeypatch):
    """Epochs score 0.5, 0.4, 0.45; the mixes 0.25 / 0.75 score 0.6 / 0.55: the 0.25 mix of the
    epoch-0 and epoch-2 weights is kept, and the metrics say so."""
    folds = _tiny_folds(tmp_path)
    scores, seen = iter([0.5, 0.4, 0.45, 0.6, 0.55]), []

    def record(model, *a, **k):
        seen.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})  # model.pt holds CPU tensors
        return {"map@1000": next(scores), "p@1": 1.0}
    monkeypatch.setattr(train_mod, "evaluate", record)
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [0.25, 0.75], "wise_confidence": 0.0}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["wise_alpha"] == 0.25 and metrics["best_epoch"] == 2 and metrics["val_map@1000"] == 0.6
    assert metrics["wise_val_map@1000"] == {"0.25": 0.6, "0.75": 0.55}
    start, last = seen[0], seen[2]
    ckpt = torch.load(tmp_path / "m.pt", weights_only=False)
    assert ckpt["meta"]["wise_alpha"] == 0.25
    w = "neck.0.weight"
    assert torch.allclose(ckpt["state_dict"][w], 0.75 * start[w] + 0.25 * last[w], atol=1e-6)


def _record(ap):
    return {"map@1000": float(np.mean(ap)), "p@1": 1.0, "query_ap": list(ap)}


def test_share_above_golden():
    """Paired resamples of 20 queries: a gain on every query is above in all of them, no gain in
    none; a gain on 2 of the 20 is above whenever one of them is drawn: 1 - 0.9^20 = 0.878."""
    base = _record([0.5] * 20)
    assert share_above(_record([0.52] * 20), base) == 1.0
    assert share_above(base, base) == 0.0
    assert abs(share_above(_record([1.0, 1.0] + [0.5] * 18), base) - (1 - 0.9 ** 20)) < 0.03


@pytest.mark.parametrize("confidence, kept", [(0.0, True), (0.95, False)])
def test_mix_wins_needs_the_confidence(confidence, kept):
    base = _record([0.5] * 20)
    lucky = _record([1.0, 1.0] + [0.5] * 18)  # mean 0.55, above in 88% of resamples
    assert mix_wins(lucky, base, confidence) is kept
    assert mix_wins(_record([0.52] * 20), base, 0.95)  # small but on every query
    assert not mix_wins(_record([0.4] * 20), base, 0.0)  # lower: never


@pytest.mark.parametrize("confidence, alpha, best", [(0.0, 0.25, 0.55), (0.95, 0.75, 0.52)])
def test_wise_takes_a_mix_only_when_the_queries_say_so(tiny, tmp_path, monkeypatch, confidence, alpha, best):
    """Epoch 0 (every query 0.5) beats epochs 1 and 2; the 0.25 mix gains on 2 queries of 20
    (mean 0.55), the 0.75 mix a little on each (0.52). Without a confidence the higher mean wins;
    at 0.95 only the mix that is above in 95% of paired resamples may replace the epoch."""
    folds = _tiny_folds(tmp_path)
    records = iter([_record([0.5] * 20), _record([0.4] * 20), _record([0.45] * 20),
                    _record([1.0, 1.0] + [0.5] * 18), _record([0.52] * 20)])
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: next(records))
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [0.25, 0.75], "wise_confidence": confidence}})
    metrics = train_fold(p, folds, str(tmp_path), 0, tmp_path / "m.pt", tmp_path / "h.csv")
    assert metrics["wise_alpha"] == alpha and metrics["val_map@1000"] == pytest.approx(best)
    shares = metrics["wise_share_above_best_epoch"]
    assert shares["0.75"] == 1.0 and 0.8 < shares["0.25"] < 0.95


def test_pull_to_start_golden_backbone_groups_only():
    w, v = torch.nn.Parameter(torch.tensor([1.0, -2.0])), torch.nn.Parameter(torch.tensor([5.0]))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1, "backbone": True},
                           {"params": [v], "lr": 0.1, "backbone": False}])
    pull = PullToStart(opt, decay=2.0)  # remembers w = [1, -2]
    with torch.no_grad():
        w.copy_(torch.tensor([3.0, 0.0]))
        v.copy_(torch.tensor([7.0]))
    pull()  # 0.1 x 2 = a fifth of the way back
    assert w.tolist() == pytest.approx([2.6, -0.4]) and v.tolist() == [7.0]
    opt.param_groups[0]["lr"] = 0.0  # a frozen or held group (head warm-up) is not pulled
    pull()
    assert w.tolist() == pytest.approx([2.6, -0.4])
    opt.load_state_dict(opt.state_dict())  # as a resume does: new group dicts, the rate read from them
    opt.param_groups[0]["lr"] = 0.05
    pull()  # a tenth of the way
    assert w.tolist() == pytest.approx([2.44, -0.56])


def test_l2sp_all_the_way_keeps_the_backbone_at_its_start(tiny, tmp_path, monkeypatch):
    """lr x l2sp_decay = 1 (one step, at the full rate): the step's backbone change is undone, the neck trained;
    BatchNorm statistics are buffers, not pulled."""
    p = parse_params({**tiny, "train": {**tiny["train"], "epochs": 1, "warmup_epochs": 0, "l2sp_decay": 1000.0}})
    seen = _validated_states(p, tmp_path, monkeypatch)
    start, end = seen[0], seen[-1]
    names = dict(train_mod.build_model(p.model)[0].named_parameters())
    weights = [k for k in start if k.startswith("backbone.") and k in names and names[k].requires_grad]
    assert weights and all(torch.equal(end[k], start[k]) for k in weights)
    assert not torch.equal(end["neck.0.weight"], start["neck.0.weight"])


def _run_with_scores(p, folds, root, monkeypatch, scores, name, resume_dir=None):
    it = iter(scores)

    def evaluate(*a, **k):
        score = next(it, None)
        if score is None:
            raise RuntimeError("killed")  # a run that dies before this validation
        return {"map@1000": score, "p@1": 1.0}
    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    metrics = train_fold(p, folds, str(root), 0, root / f"{name}.pt", root / f"{name}.csv", resume_dir)
    return metrics, torch.load(root / f"{name}.pt", weights_only=False)["state_dict"], pd.read_csv(root / f"{name}.csv")


@pytest.mark.parametrize("restart_freeze_bn", [False, True])
def test_lr_backoff_trains_again_from_the_start_at_the_lower_rate(tiny, tmp_path, monkeypatch, caplog,
                                                                  restart_freeze_bn):
    """Epoch 1 validates below epoch 0 (0.5 < 0.9): the run starts again at lr x 0.1, and what it
    keeps is exactly what a run at that rate from the start keeps; with train.backoff_freeze_bn
    that run has frozen BatchNorm statistics (the first attempt trained them), and it differs
    from the run with the other setting."""
    folds = _tiny_folds(tmp_path)
    base = {**tiny, "train": {**tiny["train"], "wise_alphas": []}}
    p = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.1, "backoff_freeze_bn": restart_freeze_bn}})
    with caplog.at_level(logging.WARNING, logger="retrieval.train"):
        metrics, saved, hist = _run_with_scores(p, folds, tmp_path, monkeypatch, [0.9, 0.5, 0.9, 0.95, 0.97], "b")
    lower = p.train.lr * 0.1
    assert metrics["lr_backoff"] == {"abandoned_epoch": 1, "abandoned_val_map@1000": 0.5, "lr": pytest.approx(lower),
                                     "freeze_bn": restart_freeze_bn}
    assert metrics["best_epoch"] == 2 and "training again from the start" in caplog.text
    assert hist["epoch"].tolist() == [0, 1, 2] and hist["val_map@1000"].tolist() == [0.9, 0.95, 0.97]
    for freeze_bn in (True, False):
        direct = parse_params({**base, "train": {**base["train"], "lr": lower, "lr_backoff": 0.0,
                                                 "freeze_bn": freeze_bn}})
        m2, saved2, _ = _run_with_scores(direct, folds, tmp_path, monkeypatch, [0.9, 0.95, 0.97], f"d{freeze_bn}")
        assert "lr_backoff" not in m2
        assert all(torch.equal(saved[k], saved2[k]) for k in saved2) == (freeze_bn == restart_freeze_bn)


def test_lr_backoff_leaves_a_run_that_helps_as_it_is(tiny, tmp_path, monkeypatch):
    """Epoch 1 above epoch 0: no backoff, and the same weights as with the backoff off."""
    folds = _tiny_folds(tmp_path)
    base = {**tiny, "train": {**tiny["train"], "wise_alphas": []}}
    on = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.1}})
    m1, saved1, _ = _run_with_scores(on, folds, tmp_path, monkeypatch, [0.5, 0.6, 0.55], "on")
    off = parse_params({**base, "train": {**base["train"], "lr_backoff": 0.0}})
    m2, saved2, _ = _run_with_scores(off, folds, tmp_path, monkeypatch, [0.5, 0.6, 0.55], "off")
    assert "lr_backoff" not in m1 and m1["best_epoch"] == 1
    assert all(torch.equal(saved1[k], saved2[k]) for k in saved2)


def test_a_killed_run_that_had_backed_off_resumes_the_lower_rate(tiny, tmp_path, monkeypatch):
    """Killed in the lower rate's epoch 2: started again, it resumes that run after its epoch 1
    (one validation left, not a new start at the first rate) and ends as the uninterrupted run."""
    folds = _tiny_folds(tmp_path)
    p = parse_params({**tiny, "train": {**tiny["train"], "wise_alphas": [], "lr_backoff": 0.1}})
    ref, ref_saved, ref_hist = _run_with_scores(p, folds, tmp_path, monkeypatch, [0.9, 0.5, 0.9, 0.95, 0.97], "ref")
    with pytest.raises(RuntimeError, match="killed"):
        _run_with_scores(p, folds, tmp_path, monkeypatch, [0.9, 0.5, 0.9, 0.95], "run", tmp_path / "state")
    got, saved, hist = _run_with_scores(p, folds, tmp_path, monkeypatch, [0.97], "run", tmp_path / "state")
    assert got["lr_backoff"] == ref["lr_backoff"] and got["best_epoch"] == 2
    assert hist["train_loss"].tolist()[1:] == ref_hist["train_loss"].tolist()[1:]
    assert all(torch.equal(saved[k], ref_saved[k]) for k in ref_saved)


def test_validation_images_held_or_decoded_give_the_same_figures(tiny_model, tmp_path, monkeypatch):
    m, meta = tiny_model
    valid = _tiny_folds(tmp_path).query("fold == 0")
    held = train_mod.validation_images(str(tmp_path), valid, 40, meta)
    monkeypatch.setattr(train_mod, "HELD_VALID_BYTES", len(valid) * 40 * 40 * 3 - 1)  # one byte short
    decoded = train_mod.validation_images(str(tmp_path), valid, 40, meta)
    assert type(held).__name__ == "HeldImages" and type(decoded).__name__ == "ImageDataset"
    a, b = (train_mod.evaluate(m, ds, valid, 4, 0, "off") for ds in (held, decoded))
    assert a["map@1000"] == b["map@1000"] and a["p@1"] == b["p@1"]
    np.testing.assert_array_equal(a[train_mod.QUERY_AP], b[train_mod.QUERY_AP])
