"""What every stage script shares: logging set-up and one-line errors instead of tracebacks."""
from __future__ import annotations

import functools
import logging
import sys
from typing import Callable

from retrieval.io import InputError


def stage(fn: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a stage's ``main``: log to stderr; bad input and Ctrl-C become one line and an exit code."""

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

    return main
