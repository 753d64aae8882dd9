"""Job: the one object a backbone's run shares between its layers."""
from pathlib import Path

from retrieval.config import parse_params
from retrieval.data.folds import fold_parts
from retrieval.train.job import Job
from retrieval.train.resume import run_fingerprint


def test_job_names_its_run_and_its_state(tiny, folds, tmp_path):
    p = parse_params(tiny)
    job = Job(p, folds, str(tmp_path), 1, tmp_path / "ckpt")
    assert job.name == f"fold 1 {p.model.backbone}"
    assert job.state_path == tmp_path / "ckpt" / "last.pt" and isinstance(job.state_path, Path)
    assert Job(p, folds, str(tmp_path), 1).state_path is None and job.notes == {}


def test_with_params_keeps_the_rest_and_the_fingerprint_follows(tiny, folds, tmp_path):
    p = parse_params(tiny)
    job = Job(p, folds, str(tmp_path), 0, tmp_path / "ckpt", notes={"a": 1})
    lower = job.with_params(p.model_copy(update={"train": p.train.model_copy(update={"lr": 1e-4})}), {"b": 2})
    assert all(getattr(lower, f) is getattr(job, f) for f in ("folds", "root", "fold", "resume_dir", "interrupts", "d"))
    assert lower.notes == {"b": 2} and job.with_params(p).notes == {"a": 1} and job.params.train.lr == p.train.lr
    train_df, valid_df = fold_parts(folds, 0)
    assert job.fingerprint() == run_fingerprint(p, 0, str(tmp_path), train_df, valid_df)
    assert lower.fingerprint() != job.fingerprint()
