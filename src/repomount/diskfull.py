"""Whether an error says a disk (or a quota) is full: an OSError's ENOSPC or EDQUOT, or
SQLite's SQLITE_FULL. Shared by the mount's journal and the server, which each turn it
into their own answer (ENOSPC for a program, 507 for a client). Pure stdlib."""

from __future__ import annotations

import errno
import sqlite3


def is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False
