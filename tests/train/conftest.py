"""Fixtures of the training tests: tiny params, folds of generated images, and validations
whose figures a test sets."""
import pytest
from train_helpers import make_folds

from retrieval.train import run as run_mod


@pytest.fixture
def tiny(tiny_params):
    return tiny_params({"seed": 1, "train": {"epochs": 2}})


@pytest.fixture
def folds(tmp_path):
    return make_folds(tmp_path)


@pytest.fixture
def validations(monkeypatch):
    """``validations(figures)``: from then on each validation returns the next of ``figures`` (a
    number: the mAP@1000, with P@1 1.0; a dict: the whole record) and one past their end raises
    RuntimeError('killed'), a run that dies there. Returns the list that gets the weights (on
    the CPU) each validation saw, in order."""
    def install(figures):
        it, seen = iter(figures), []

        def evaluate(model, *a, **k):
            figure = next(it, None)
            if figure is None:
                raise RuntimeError("killed")  # a run that dies before this validation
            seen.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            return figure if isinstance(figure, dict) else {"map@1000": figure, "p@1": 1.0}
        monkeypatch.setattr(run_mod, "evaluate", evaluate)
        return seen
    return install
