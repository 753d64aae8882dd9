"""retrieval/cli.py: a pipeline stage's flags and params (stage_args), and the stage wrapper."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retrieval.cli import stage, stage_args
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
