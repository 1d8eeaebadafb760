"""The ``afxdp-proxy`` command: :func:`afxdp_proxy.cli.main` behind an import that Ctrl-C may
interrupt, with output that may outlive its reader.

Loading the CLI's modules (the extension, prometheus_client, scapy on demand) takes a few hundred
milliseconds; a SIGINT then raised KeyboardInterrupt out of the console script's own import line,
a traceback. Here it exits 130, as a command the CLI runs does on SIGINT.

A reader that goes away (``afxdp-proxy bench 2>&1 | head -2``) made the next write raise
BrokenPipeError, which ended a bench after its first line, with status 0 and nothing measured.
Here the command goes on with its output to /dev/null: the bench writes its files, a proxy keeps
proxying.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, TextIO

EXIT_SIGINT = 130  # 128 + SIGINT, the shell's convention


class ReaderGone:
    """A text stream whose writes, once its reader has gone (EPIPE), go to /dev/null instead."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())  # what is still buffered goes there too, at the next flush
        os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> int:
    # A script's `afxdp-proxy run &` inherits SIGINT ignored (POSIX, for asynchronous lists),
    # and Python then leaves it so: a SIGINT was lost until the proxy set its own handler, and
    # honoured after. Ctrl-C and `kill -INT` mean stop from the first instruction on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout, sys.stderr = ReaderGone(sys.stdout), ReaderGone(sys.stderr)  # type: ignore[assignment]
    try:
        from afxdp_proxy.cli import main as cli_main

        return cli_main()  # its commands catch their own; this covers building the parser too
    except KeyboardInterrupt:
        return EXIT_SIGINT
    finally:
        sys.stdout.flush()  # here, where a reader gone is dealt with, not at the interpreter's exit
        sys.stderr.flush()
