"""Logging setup shared by the commands: to a terminal, the journal, or a rotated file.

- A mount in the background logs to STATE_DIR/.../mount.log, rotated at LOG_MAX_BYTES
  with LOG_BACKUPS old files kept (mount.log.1, ...).
- Under systemd (stdout or stderr is the journal's stream, as JOURNAL_STREAM says, or
  INVOCATION_ID is set and stderr is no terminal) each line goes to stdout with its
  syslog priority as a `<N>` prefix, which journald reads as the line's priority.
- Otherwise (the foreground) to stderr, with the time.

Wherever it goes, a record's message is one line: its control characters (a remote's
names and error messages may hold any) are escaped (printable.py), so no message forges
a line of the log or sends an escape sequence to a terminal reading it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TextIO

from repomount.printable import printable

LOG_MAX_BYTES = 8 << 20
LOG_BACKUPS = 3


class _OneLine(logging.Formatter):
    """A record's line with its control characters escaped. (A traceback, appended
    after it, keeps its lines.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


_TIMED = _OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


class _JournalFormatter(_OneLine):
    """`<N>name: message`: journald takes N (syslog's priority) off and keeps it."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 2 if record.levelno > 40 else 7)
        text = super().format(record)
        # every line of a traceback carries the priority too
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """A rotated log that the process's stdout and stderr follow: what C code or an
    uncaught error writes there lands in the current file, not a rotated one."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int, own_fds: bool) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.own_fds = own_fds
        self._point_fds()

    def doRollover(self) -> None:
        super().doRollover()
        self._point_fds()

    def _point_fds(self) -> None:
        if self.own_fds and self.stream is not None:
            self.stream.flush()
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


def under_journal() -> bool:
    """Whether stdout/stderr is systemd's journal (a service's output)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if stream:
        for fd in (1, 2):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stream == f"{st.st_dev}:{st.st_ino}":
                return True
        return False  # inherited by something whose output goes elsewhere
    return bool(os.environ.get("INVOCATION_ID")) and not os.isatty(2)


def setup(
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    file: Path | None = None,
    max_bytes: int = LOG_MAX_BYTES,
    backups: int = LOG_BACKUPS,
) -> None:
    """Log at `level` to `file` (rotated; stdout and stderr follow it), else to the
    journal under systemd, else to `stream` (stderr)."""
    handler: logging.Handler
    if file is not None:
        handler = _RotatingLog(file, max_bytes=max_bytes, backups=backups, own_fds=True)
        handler.setFormatter(_TIMED)
    elif stream is None and under_journal():
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_TIMED)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request with its URL at INFO; our own lines say what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
