"""What every stage script shares: its flags and params (:func:`stage_args`), logging set-up, and
one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import sys
from typing import Callable

from retrieval.config import load_params
from retrieval.io import InputError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, quota, file-size limit


def stage(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's ``main``: log to stderr; bad input (exit 2), Ctrl-C (130) and a full disk (1)
    become one line; a closed stdout pipe (141) ends it quietly. Outputs are written atomically,
    so a full disk leaves the previous ones."""

    @functools.wraps(fn)
    def main(argv=None) -> int:
        if not logging.getLogger().handlers:  # leave a caller's logging (a notebook, pytest) alone
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(argv) or 0
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
