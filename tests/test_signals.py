"""Handlers installed through afxdp_proxy.signals stay in the process that installed them: a
forked child (pyroute2's netns helpers) takes the default action instead of unwinding the
parent's stack in a copy of it."""

from __future__ import annotations

import os
import signal
import time

from afxdp_proxy import signals


def _raise(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def test_a_forked_child_takes_the_default_action() -> None:
    old = signals.install(_raise, (signal.SIGTERM,))
    try:
        pid = os.fork()
        if pid == 0:  # the child: SIGTERM must end it, not raise into this test's code
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except BaseException:
                os._exit(3)
            os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        # the parent keeps its handler
        assert signal.getsignal(signal.SIGTERM) is _raise
    finally:
        signals.restore(old)
    assert signal.getsignal(signal.SIGTERM) is old[signal.SIGTERM]
