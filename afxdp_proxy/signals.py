"""Signal handlers that stay in the process that installed them.

pyroute2 (0.9 and later) does namespace work in ``os.fork()`` children that run a little
Python and then ``os._exit``; it stops them with SIGTERM. A child inherits the parent's
Python-level handlers, so a handler that raises (KeyboardInterrupt to unwind a teardown)
would make the child unwind *the parent's* stack: it tore down the very namespaces its
parent had just created. Every handler installed here is reset to the default action in
any forked child, before that child runs a line of Python.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import Any

Handler = Callable[[int, Any], Any]
_ours: set[int] = set()


def _reset_in_child() -> None:
    for sig in _ours:
        signal.signal(sig, signal.SIG_DFL)


os.register_at_fork(after_in_child=_reset_in_child)


def install(handler: Handler, signals: Iterable[int]) -> dict[int, Any]:
    """Set handler for each signal (main thread only); returns the previous handlers for restore()."""
    old = {}
    for sig in signals:
        old[sig] = signal.signal(sig, handler)
        _ours.add(sig)
    return old


def restore(old: dict[int, Any]) -> None:
    """Put back what install() replaced."""
    for sig, handler in old.items():
        signal.signal(sig, handler)
        _ours.discard(sig)
