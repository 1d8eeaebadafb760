"""The proxy's log records, on stderr, in one of two formats (`--log-format`):

text  ``afxdp-proxy: [warning: |error: ]message``: one line a record, no timestamp (journald
      and terminals add their own). Under journald (JOURNAL_STREAM names our stderr) each line
      starts with a syslog priority, ``<4>``, which journald turns into the entry's PRIORITY.
json  one JSON object a line: ``time`` (ISO 8601, UTC), ``level``, ``message``, then the
      record's fields (counters, the check that failed, ...), for jq and log shippers.

A record's fields are passed as ``extra={"fields": {...}}``; the text format leaves them out
(its message says everything).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

LOGGER = logging.getLogger("afxdp_proxy")
FORMATS = ("text", "json")
_PRIORITY = {logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def under_journald(stream: TextIO) -> bool:
    """True when stream is the journal's stream socket (systemd sets JOURNAL_STREAM=dev:inode)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


class TextFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
        prio = f"<{_PRIORITY.get(record.levelno, 6)}>" if self.journal else ""
        return f"{prio}afxdp-proxy: {level}{record.getMessage()}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {"time": t, "level": record.levelname.lower(), "message": record.getMessage()}
        out.update(getattr(record, "fields", None) or {})
        return json.dumps(out, default=str)


def setup(fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send the package's records to stream (default stderr) in fmt ("text" or "json")."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(under_journald(stream)))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def fields(**kw: Any) -> dict[str, Any]:
    """``extra=`` for a record with fields: ``log.info("...", extra=fields(rx=1))``."""
    return {"fields": kw}
