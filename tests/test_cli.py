"""retrieval/cli.py: a pipeline stage's flags and params (stage_args), and the stage wrapper."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retrieval.cli import expand_stages, stage, stage_args
from retrieval.io import InputError

ROOT = Path(__file__).resolve().parents[1]

DOC = """demo: a docstring.

Writes  ``--out``
"""


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"seed": 7}))
    return path


def test_required_optional_and_int_flags(params_file):
    args, p = stage_args(DOC, ["--params", str(params_file), "--out", "o", "--fold", "2"],
                         required="--out --fold", optional="--metrics --nproc", ints="--fold --nproc")
    assert (args.out, args.fold, args.metrics, args.nproc) == ("o", 2, None, None)
    assert p.seed == 7  # the params file is read and checked


def test_missing_required_flag_exits_2(params_file, capsys):
    with pytest.raises(SystemExit) as exit_:
        stage_args(DOC, ["--params", str(params_file)], required="--out")
    assert exit_.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_non_integer_is_refused(params_file, capsys):
    with pytest.raises(SystemExit):
        stage_args(DOC, ["--params", str(params_file), "--fold", "one"], required="--fold", ints="--fold")
    assert "invalid int value: 'one'" in capsys.readouterr().err


def test_help_prints_the_whole_docstring(params_file, capsys):
    with pytest.raises(SystemExit):
        stage_args(DOC, ["--help"], required="--out")
    assert "Writes  ``--out``" in capsys.readouterr().out


def test_bad_params_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"seed": 7, "sed": 1}))
    main = stage(lambda argv: stage_args(DOC, argv, required="--out") and 0)
    assert main(["--params", str(bad), "--out", "o"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "sed" in err and "\n" not in err


def test_input_error_is_one_line(capsys):
    def fails(argv):
        raise InputError("folds.csv: no fold column")
    assert stage(fails)([]) == 2
    assert capsys.readouterr().err == "error: folds.csv: no fold column\n"


def test_a_closed_stdout_pipe_ends_the_stage_quietly(tmp_path):
    """`python -m stages.compare A B | head -c 10`: the reader leaves before the JSON is written;
    the stage exits 141 (as a shell reports SIGPIPE) with nothing on stderr, not a traceback."""
    a = tmp_path / "a.csv"
    a.write_text("query_id,label,ap,p@1\nq0,x,0.5,0\n")
    script = (f"import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
              f"from stages import compare; sys.exit(compare.main([{str(a)!r}, {str(a)!r}, '--resamples', '5']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert done.returncode == 141 and done.stderr == ""


SMALL_DVC = """
stages:
  prep:
    cmd: python -m stages.prep --root ${data.root} --out out/prep
    deps:
      - stages/prep.py
      - ${data.root}/train
    outs:
      - out/prep
  fit:
    foreach: ${cv.folds}
    do:
      cmd: >-
        python -m stages.fit --fold ${item}
        --epochs ${train.epochs} --model "out/fit/fold${item}/model one.pt"
      deps: [out/prep]
      outs:
        - out/fit/fold${item}/model one.pt:
            persist: true
      metrics:
        - out/fit/fold${item}/metrics.json:
            cache: false
  each:
    foreach: [a, b]
    do:
      cmd: python -m stages.each ${item}
"""


def test_expand_stages_golden():
    params = {"data": {"root": "d"}, "cv": {"folds": [2, 0]}, "train": {"epochs": 3}, "unused": 1}
    fit = lambda f: {"cmd": ["python", "-m", "stages.fit", "--fold", f, "--epochs", "3", "--model",  # noqa: E731
                             f"out/fit/fold{f}/model one.pt"],
                     "deps": ["out/prep"], "outs": [f"out/fit/fold{f}/model one.pt"],
                     "metrics": [f"out/fit/fold{f}/metrics.json"]}
    expanded = expand_stages(SMALL_DVC, params)
    assert expanded == {
        "prep": {"cmd": ["python", "-m", "stages.prep", "--root", "d", "--out", "out/prep"],
                 "deps": ["stages/prep.py", "d/train"], "outs": ["out/prep"], "metrics": []},
        "fit@2": fit("2"), "fit@0": fit("0"),
        "each@a": {"cmd": ["python", "-m", "stages.each", "a"], "deps": [], "outs": [], "metrics": []},
        "each@b": {"cmd": ["python", "-m", "stages.each", "b"], "deps": [], "outs": [], "metrics": []},
    }
    assert list(expanded) == ["prep", "fit@2", "fit@0", "each@a", "each@b"]  # dvc.yaml's order, then the items'


def test_expand_stages_names_a_missing_key():
    with pytest.raises(KeyError, match="epochs"):
        expand_stages(SMALL_DVC, {"data": {"root": "d"}, "cv": {"folds": [0]}, "train": {}})


def test_expand_stages_of_the_repository_dvc_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = expand_stages((ROOT / "dvc.yaml").read_text(), params)
    folds = params["cv"]["folds"]
    assert [n for n in stages if n.startswith("train@")] == [f"train@{f}" for f in folds]
    assert not any("${" in text for s in stages.values() for part in s.values() for text in part)
    assert f"{params['data']['root']}/train" in stages[f"train@{folds[0]}"]["deps"]


def rerank_args(fold: int) -> list[str]:
    """The flags dvc.yaml gives rerank@fold."""
    d = f"outputs/extract/fold{fold}"
    r = f"outputs/rerank/fold{fold}"
    return ["--query", f"{d}/query.npz", "--reference", f"{d}/reference.npz", "--valid", f"{d}/valid.npz",
            "--ranking", f"{r}/ranking.npz", "--metrics", f"{r}/metrics.json", "--ablation", f"{r}/ablation.csv",
            "--valid-ap", f"{r}/valid_ap.csv", "--valid-ranking", f"{r}/valid_ranking.npz"]


@pytest.fixture
def dvc_copy(tmp_path, monkeypatch):
    """A folder holding the repository's dvc.yaml and params.yaml, as the working directory."""
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_missing_declared_input_names_the_stage_to_run_first(dvc_copy, capsys):
    # a bare "No such file or directory" for query.npz, until now
    from stages import ensemble, rerank
    assert rerank.main(rerank_args(0)) == 2
    assert capsys.readouterr().err == ("error: outputs/extract/fold0/query.npz is missing: run `dvc repro "
                                       "extract@0` first (and 3 more missing)\n")
    for f in (1, 2):
        for name in ("query", "reference", "valid"):
            Path(f"outputs/extract/fold{f}").mkdir(parents=True, exist_ok=True)
            Path(f"outputs/extract/fold{f}/{name}.npz").write_bytes(b"")
    Path("outputs/check").mkdir(parents=True)
    Path("outputs/check/passed.txt").write_text("x\n")
    assert rerank.main(rerank_args(1)) == 2  # its inputs exist (empty): the loader's own error, naming one
    assert "outputs/extract/fold1/query.npz" in capsys.readouterr().err
    args = ["--rankings", "outputs/rerank/fold{fold}/ranking.npz", "--rerank-metrics",
            "outputs/rerank/fold{fold}/metrics.json", "--valid-ap", "outputs/rerank/fold{fold}/valid_ap.csv",
            "--submission", "outputs/submission/submission.csv", "--metrics", "outputs/ensemble/metrics.json",
            "--pooled-ap", "outputs/ensemble/valid_ap.csv"]
    assert ensemble.main(args) == 2  # a folder written by a stage of several folds: the group
    assert capsys.readouterr().err == "error: outputs/rerank is missing: run `dvc repro rerank` first\n"


def test_a_file_not_found_inside_a_stage_is_one_line(dvc_copy, capsys):
    def reads(argv):
        open("outputs/train/fold2/model.pt", "rb")
    assert stage(reads)([]) == 2
    assert capsys.readouterr().err == "error: outputs/train/fold2/model.pt is missing: run `dvc repro train@2` first\n"
    assert stage(lambda argv: open("elsewhere.csv"))([]) == 2
    assert capsys.readouterr().err == "error: elsewhere.csv is missing\n"


def test_a_write_past_the_file_size_limit_names_the_file(tmp_path):
    # EFBIG said "File too large" and no file, until now
    script = ("import resource, signal, sys\n"
              "from retrieval.cli import stage\nfrom retrieval.io import write_json\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
              "sys.exit(stage(lambda argv: write_json(sys.argv[1], list(range(5000))))([]))\n")
    out = tmp_path / "big.json"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, cwd=str(ROOT))
    assert done.returncode == 1
    assert done.stderr == f"error: File too large writing {out}; no output was left half-written\n"
    assert not out.exists() and not list(tmp_path.iterdir())
