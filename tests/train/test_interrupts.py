"""Ctrl-C in training: a SIGINT in the block stops this process once, is never lost, and the
handlers are put back after it."""
import signal
import sys
import threading

import pytest

from retrieval.train.interrupts import Interrupts, interrupt_main_process_only


def test_check_raises_only_when_a_ctrl_c_is_pending():
    interrupts = Interrupts()
    interrupts.check()
    interrupts.pending = True
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()  # still pending: a swallowed interrupt is never lost


def test_a_sigint_in_the_block_is_kept_pending_and_the_handlers_put_back():
    hook = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt):
        with interrupt_main_process_only() as interrupts:
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # swallowed on its way, as in a loader's at-fork hook
            assert interrupts.pending
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and sys.unraisablehook is hook


def test_outside_the_main_thread_the_handler_is_left_alone():
    seen = []

    def body():
        with interrupt_main_process_only() as interrupts:
            seen.append((signal.getsignal(signal.SIGINT), interrupts.pending))
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [(signal.default_int_handler, False)]
