"""Faults beyond bad input: a write that fails part way (disk full) leaves the previous output.

Every output is written to a temporary name beside it and renamed (retrieval.io.atomic_path).
Here the write itself fails: with ENOSPC raised in the middle of a stage's write, and, in a
child process, with a real kernel refusal (a file-size limit, EFBIG) that also reaches
torch.save's and numpy's own writers.
"""
import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_stage_hitting_enospc_keeps_its_previous_output(tmp_path, monkeypatch, capsys):
    from retrieval.rank.ranking_file import save_ranking
    from stages import ensemble
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"cv": {"n_folds": 2, "folds": [0, 1]}}))
    for f in (0, 1):
        save_ranking(f"rk{f}.npz", np.array(["q"]), np.array(["r0", "r1"]), np.array([[2.0, 1.0]]),
                     np.array([[0, 1]]), {"features": "f"})
        Path(f"rm{f}.json").write_text(json.dumps({"valid": {"final": {"map@1000": 1.0, "p@1": 1.0, "n_queries": 1}}}))
        Path(f"va{f}.csv").write_text(f"query_id,label,ap,p@1\nv{f},a,1.0,1\n")
    args = ["--rankings", "rk{fold}.npz", "--rerank-metrics", "rm{fold}.json", "--valid-ap", "va{fold}.csv",
            "--pooled-ap", "va.csv", "--submission", "s.csv", "--metrics", "m.json"]
    assert ensemble.main(args) == 0
    before = {p: Path(p).read_bytes() for p in ("s.csv", "m.json")}

    def full(self, data, *a, **k):  # half the text reaches the disk, then it is full
        with open(self, "w") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    Path("rk1.npz").write_bytes(Path("rk0.npz").read_bytes())
    assert ensemble.main(args) == 1  # the submission's write hits ENOSPC half way
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: No space left on device" in err and "Traceback" not in err
    assert {p: Path(p).read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


WRITERS = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import numpy as np, pandas as pd, torch
    from retrieval.rank.ranking_file import save_ranking
    from retrieval.embed.feature_file import Features, save_features
    from retrieval.io import atomic_path, write_json
    from retrieval.model.checkpoints import save_members

    def write(kind, path, n):
        if kind == "json":
            write_json(path, {"x": list(range(n))})
        elif kind == "features":
            save_features(path, Features([str(i) for i in range(n)], np.ones((n, 64), np.float32),
                                          meta={"model_fingerprint": "m"}))
        elif kind == "ranking":
            save_ranking(path, np.arange(n).astype(str), np.arange(n).astype(str), np.ones((n, 16)),
                         np.zeros((n, 16), np.int64), {"features": "f"})
        elif kind == "checkpoint":
            save_members(path, [({"w": torch.ones(n, 64)}, {"backbone": "x"})])
        elif kind == "csv":
            with atomic_path(path) as tmp:
                pd.DataFrame({"a": range(n)}).to_csv(tmp, index=False)

    out = Path(sys.argv[1])
    kinds = ["json", "features", "ranking", "checkpoint", "csv"]
    for kind in kinds:
        write(kind, out / kind, 10)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
    for kind in kinds:
        try:
            write(kind, out / kind, 20000)
            print(kind, "written")
        except Exception as err:
            print(kind, "failed", type(err).__name__)
""")


def test_a_write_the_kernel_refuses_leaves_every_kind_of_output_intact(tmp_path):
    """Each writer the stages use, cut off by the kernel part way: the old file, no temporary."""
    out = tmp_path / "out"
    out.mkdir()
    # the child writes a small version of each, sets the limit, then tries a large one
    res = subprocess.run([sys.executable, "-c", WRITERS, str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    assert set(lines) == {"json", "features", "ranking", "checkpoint", "csv"}
    # each as an OSError with its errno (EFBIG), which a stage reports in one line; torch's own
    # writer raised a bare RuntimeError for the checkpoint
    assert all(v == "failed OSError" for v in lines.values()), lines
    for kind in lines:  # still the small first version, readable
        assert (out / kind).stat().st_size < 16384, kind
    assert json.loads((out / "json").read_text()) == {"x": list(range(10))}
    from retrieval.embed.feature_file import load_features
    assert len(load_features(out / "features").ids) == 10
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary left


# -- two runs at once -------------------------------------------------------------------------

def test_a_resume_folder_is_held_by_one_run_at_a_time(tmp_path):
    from retrieval.io import InputError, claimed
    import pytest
    with claimed(tmp_path / "fold0"):
        with pytest.raises(InputError, match=rf"fold0: in use by another run \(pid {__import__('os').getpid()}\)"):
            with claimed(tmp_path / "fold0"):
                pass
        with claimed(tmp_path / "fold1"):  # another fold's folder: free
            pass
    with claimed(tmp_path / "fold0"):  # released
        pass


def test_train_on_a_resume_folder_in_use_is_refused(tmp_path, monkeypatch, capsys):
    from retrieval.io import claimed
    from stages import train
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"cv": {"n_folds": 2, "folds": [0, 1]}}))
    Path("folds.csv").write_text("image,id,label,fold,role\n" + "".join(
        f"train/c{c}/{i}.jpg,c{c}/{i},c{c},{c % 2},reference\n" for c in range(4) for i in range(2)))
    with claimed("ckpt/fold0"):  # as if another train of fold 0 were running
        assert train.main(["--fold", "0", "--folds", "folds.csv", "--model", "m.pt", "--history", "h.csv",
                           "--metrics", "m.json", "--resume-dir", "ckpt/fold0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ckpt/fold0: in use by another run" in err
    assert not Path("m.pt").exists()
