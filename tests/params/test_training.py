"""retrieval/params/training.py: the data, demo, cv, split, model and train sections refuse bad
values in one line naming the key (through ``parse_params``, as the stages read them)."""
import pytest

from retrieval.config import parse_params
from retrieval.io import InputError
from retrieval.params.training import CVParams, ModelParams, TrainParams


@pytest.mark.parametrize("raw,needle", [
    ({"demo": {"n_train_classes": 1}}, "demo.n_train_classes"),
    ({"demo": {"size": 31}}, "demo.size: Input should be greater than or equal to 32"),
    ({"cv": {"folds": [0, 3]}}, "cv.folds must be distinct folds of 0..2"),
    ({"cv": {"folds": [1, 1]}}, "cv.folds"),
    ({"cv": {"folds": []}}, "cv.folds"),
    ({"cv": {"n_folds": 1, "folds": [0]}}, "cv.n_folds"),
    ({"split": {"query_fraction": 1.5}}, "split.query_fraction"),
    ({"split": {"query_fraction": 0.0}}, "split.query_fraction"),
    ({"model": {"head": "softmax"}}, "model.head"),
    ({"model": {"backbone": []}}, "model.backbone: a list of backbones must name at least one"),
    ({"model": {"backbone": ["a", "a"]}}, "model.backbone: a list of backbones must name at least one, each once"),
    ({"model": {"gem_p": 0.5}}, "model.gem_p"),
    ({"train": {"epoch": 3}}, "train.epoch: is not a known key"),
    ({"train": {"epochs": "many"}}, "train.epochs"),
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"train": {"image_size": 16}}, "train.image_size: Input should be greater than or equal to 32"),
    ({"train": {"sampler": "pk", "batch_size": 30}}, "train.batch_size 30 must be a multiple of train.m_per_class 4"),
    ({"train": {"final_epochs": 2}}, "train.final_epochs needs train.final_image_size"),
    ({"train": {"final_epochs": 2, "final_image_size": 16}}, "train.final_image_size: Input should be greater"),
    ({"train": {"epochs": 2, "final_epochs": 3, "final_image_size": 256}}, "train.final_epochs 3 exceeds train.epochs 2"),
    ({"train": {"epochs": 2, "head_warmup_epochs": 2}}, "train.head_warmup_epochs 2 leaves no epoch"),
    ({"train": {"lr": 1e-2, "l2sp_decay": 101.0}}, "train.l2sp_decay 101.0 x the backbone's lr 0.01 is above 1"),
    ({"train": {"layer_decay": 1.5}}, "train.layer_decay"),
    ({"train": {"wise_alphas": [0.5, 1.0]}}, "train.wise_alphas: must be distinct mixing weights"),
    ({"train": {"wise_alphas": [0.5, 0.5]}}, "train.wise_alphas: must be distinct mixing weights"),
    ({"train": {"num_workers": -1}}, "train.num_workers: -1: a count of worker processes"),
    ({"train": {"neck_lr_scale": 0.5}}, "train.neck_lr_scale: is not a known key"),  # removed (issue 34)
])
def test_bad_values_name_the_key(raw, needle):
    with pytest.raises(InputError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        parse_params(raw, "params.yaml")


def test_the_edges_that_pass():
    assert CVParams(n_folds=5, folds=[4, 0]).folds == [4, 0]
    assert TrainParams(sampler="pk", batch_size=8, m_per_class=4).batch_size == 8
    assert TrainParams(epochs=2, final_epochs=2, final_image_size=256).final_epochs == 2
    assert TrainParams(epochs=2, head_warmup_epochs=1).head_warmup_epochs == 1
    assert TrainParams(lr=1e-2, l2sp_decay=100.0).l2sp_decay == 100.0  # exactly all the way back
    assert TrainParams(wise_alphas=[]).wise_alphas == []


def test_backbones_and_members():
    assert ModelParams().backbones == ["tf_efficientnet_lite0"]
    two = ModelParams(backbone=["tf_efficientnet_lite0", "tf_efficientnet_lite2"], embedding_dim=64)
    assert two.backbones == ["tf_efficientnet_lite0", "tf_efficientnet_lite2"]
    member = two.member("tf_efficientnet_lite2")
    assert member.backbone == "tf_efficientnet_lite2" and member.embedding_dim == 64
    assert two.backbone == ["tf_efficientnet_lite0", "tf_efficientnet_lite2"]  # left as it was
