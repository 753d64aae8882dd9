"""What every stage script shares: its flags and params (:func:`stage_args`), logging set-up, and
one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

import yaml

from retrieval.config import load_params
from retrieval.io import DISK_FULL, InputError


def stage(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's ``main``: log to stderr; bad input (exit 2), a missing input (2, naming the
    stage that writes it), Ctrl-C (130) and a full disk (1) become one line; a closed stdout pipe
    (141) ends it quietly. Outputs are written atomically, so a full disk leaves the previous ones."""

    @functools.wraps(fn)
    def main(argv=None) -> int:
        if not logging.getLogger().handlers:  # leave a caller's logging (a notebook, pytest) alone
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            _check_inputs(fn, argv)
            return fn(argv) or 0
        except FileNotFoundError as err:  # an input the checks above could not know of
            print(f"error: {_missing_message(str(err.filename)) if err.filename else err}", file=sys.stderr)
            return 2
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # the reader of stdout is gone (`... | head`): nothing to tell it
            _silence_stdout()
            return 141  # 128 + SIGPIPE, as a shell reports a command killed by it
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            where = f" writing {err.filename}" if err.filename else ""
            print(f"error: {err.strerror or err}{where}; no output was left half-written", file=sys.stderr)
            return 1

    return main


def _check_inputs(fn: Callable, argv) -> None:
    """Refuse, in one line, a run with dvc.yaml's flags whose declared inputs are missing."""
    missing = _missing_inputs(_module_of(fn), sys.argv[1:] if argv is None else list(argv))
    if missing:
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise InputError(_missing_message(missing[0]) + more)


def _module_of(fn: Callable) -> str:
    """``stages.rerank`` for a stage's ``main``, also when run as ``python -m stages.rerank``."""
    if fn.__module__ != "__main__":
        return fn.__module__
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec else ""


_REF = re.compile(r"\$\{([\w.]+)\}")  # dvc.yaml's ${key.sub} and ${item}


def expand_stages(dvc_yaml: str, params: dict) -> dict[str, dict]:
    """The stages of ``dvc_yaml`` (dvc.yaml's text) in its order, each ``foreach`` stage expanded
    to one stage per item (``train@0``, ``train@1``, ..) and every ``${key}`` filled from
    ``params`` (``${item}``: the item): ``{name: {"cmd": argv, "deps": [..], "outs": [..],
    "metrics": [..]}}``. A key missing from ``params`` raises KeyError."""
    out = {}
    for name, body in yaml.safe_load(dvc_yaml)["stages"].items():
        if "foreach" not in body:
            out[name] = _filled(body, params, None)
            continue
        spec = body["foreach"]
        ref = _REF.fullmatch(spec) if isinstance(spec, str) else None
        for item in _lookup(params, ref[1]) if ref else spec:
            out[f"{name}@{item}"] = _filled(body["do"], params, item)
    return out


def _lookup(params: dict, key: str):
    """``params["a"]["b"]`` for ``key`` ``a.b``."""
    return functools.reduce(lambda node, part: node[part], key.split("."), params)


def _filled(body: dict, params: dict, item) -> dict:
    """One stage's command (split into argv) and paths, ``${...}`` filled."""
    def fill(text: str) -> str:
        return _REF.sub(lambda m: str(item if m[1] == "item" else _lookup(params, m[1])), text)

    def paths(key: str) -> list[str]:  # an entry is a path, or {path: its options}
        return [fill(next(iter(e)) if isinstance(e, dict) else e) for e in body.get(key) or []]
    return {"cmd": shlex.split(fill(body["cmd"])), "deps": paths("deps"), "outs": paths("outs"),
            "metrics": paths("metrics")}


def _dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages (:func:`expand_stages`) with params.yaml's values, each stage's metrics
    among its ``outs``; empty without both files here, or if they do not expand."""
    if not (Path("dvc.yaml").is_file() and Path("params.yaml").is_file()):
        return {}
    try:
        stages = expand_stages(Path("dvc.yaml").read_text(), yaml.safe_load(Path("params.yaml").read_text()))
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):  # what DVC could not read either
        return {}
    return {name: {**s, "outs": s["outs"] + s["metrics"]} for name, s in stages.items()}


def _missing_inputs(module: str, argv: list[str]) -> list[str]:
    """The declared inputs (dvc.yaml's deps) missing for the stage that this command runs, when
    it runs as dvc.yaml says; DVC itself refuses a missing input before a stage runs."""
    stages = _dvc_stages()
    for body in stages.values():
        if body["cmd"][1:3] == ["-m", module] and body["cmd"][3:] == argv:  # another stage's output
            return [d for d in body["deps"] if not os.path.exists(d) and _makers(stages, d)]
    return []


def _makers(stages: dict[str, dict], path: str) -> list[str]:
    """The stages whose outputs are ``path``, hold it, or lie in it (a folder)."""
    rel = os.path.relpath(path) if os.path.isabs(path) else os.path.normpath(path)
    return sorted(n for n, b in stages.items() for o in b["outs"]
                  if rel == o or rel.startswith(o.rstrip("/") + "/") or o.startswith(rel.rstrip("/") + "/"))


def _missing_message(path: str) -> str:
    """``path is missing``, and the dvc.yaml stage that writes it, if any."""
    makers = _makers(_dvc_stages(), path)
    groups = {n.split("@")[0] for n in makers}
    todo = next(iter(groups)) if len(makers) > 1 and len(groups) == 1 else " ".join(makers)
    return f"{path} is missing" + (f": run `dvc repro {todo}` first" if makers else "")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real file behind stdout (a test's capture)
        pass


def stage_args(doc: str, argv, required: str, optional: str = "", ints: str = ""):
    """A pipeline stage's flags, parsed, and its params: ``(args, params)``. ``required`` and
    ``optional`` name the flags (``"--out --metrics"``; an optional one defaults to None), ``ints``
    those that are integers. dvc.yaml passes them; the stage's docstring, shown whole by
    ``--help``, says what each one reads or writes (tests/test_dvc_contract.py checks it names
    every flag that dvc.yaml passes)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    for names, needed in ((required, True), (optional, False)):
        for name in names.split():
            ap.add_argument(name, required=needed, type=int if name in ints.split() else str)
    args = ap.parse_args(argv)
    return args, load_params(args.params)


def parser(doc: str, params: bool = True) -> argparse.ArgumentParser:
    """A stage's argument parser, described by the first line of its docstring ``doc``; with
    ``params``, the ``--params`` option every pipeline stage takes (default ``params.yaml``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if params:
        ap.add_argument("--params", default="params.yaml")
    return ap
