"""Stopping a training run: Ctrl-C stops the main process only, and is never lost (one line)."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


class Interrupts:
    """Ctrl-C handling for a training run (see :func:`interrupt_main_process_only`)."""

    def __init__(self):
        self.pending = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if a Ctrl-C came and was swallowed on its way (called after
        every optimiser step and every validation)."""
        if self.pending:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_main_process_only():
    """Within the block, Ctrl-C (SIGINT) stops this process only, and is never lost.

    A terminal sends SIGINT to every process of the foreground group, DataLoader workers too.
    Forked workers inherit the handler set here and ignore the signal from their first
    instant, before any ``worker_init_fn`` runs. In this process a KeyboardInterrupt raised
    where Python swallows exceptions (the at-fork hooks that run while a loader starts its
    workers, ``__del__`` methods: "Exception ignored in ...") is not printed but kept
    pending, and :meth:`Interrupts.check` raises it at the next training step or epoch.
    Yields the :class:`Interrupts`; a non-default SIGINT handler, or a call outside the main
    thread, is left alone.
    """
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield interrupts
        return
    main_pid = os.getpid()
    previous_hook = sys.unraisablehook

    def handler(signum, frame):
        if os.getpid() != main_pid:
            return  # a forked child (DataLoader worker): the main process stops the run
        interrupts.pending = True
        raise KeyboardInterrupt

    def unraisable(info):
        if not (interrupts.pending and issubclass(info.exc_type, KeyboardInterrupt)):
            previous_hook(info)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield interrupts
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = previous_hook
