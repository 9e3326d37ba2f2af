"""Attributes the remote does not keep, kept here: set by chmod, chown and utimensat.

Most remotes keep no owner, no directory modes and no times of our choosing (they stamp
their own; the native server keeps a file's mode and mtime, sent with its writes). So
that those operations are never "a silent 0 that is later undone", what was set is
stored per path in the journal's database (a table of its own) and laid over what
listings say, across remounts of the same state directory. Times hold only while the
file is at the version they were set on (a change made elsewhere brings its own time);
a file we wrote keeps the time of the write with the version our upload made. Where
the remote keeps files' mtimes (native), a file shows the listed one instead: it may
have been set elsewhere since, on the same version. Modes and owners hold until the
name is removed.

An in-memory copy answers every lookup (listings apply it to each entry); SQLite only
makes it durable. Used from the trio thread; statements are short local writes. One
that fails (the state directory's disk full) is logged and the copy in memory stands:
a chmod or a rename must not fail half done for a row of metadata.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace

from repomount.vfs.nodes import MODE_BITS, Node

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attrs (
    path TEXT PRIMARY KEY,
    version TEXT,
    mode INTEGER, uid INTEGER, gid INTEGER, atime_ns INTEGER, mtime_ns INTEGER
);
"""


@dataclass(frozen=True)
class Kept:
    version: str | None = None  # the file's version when times were set
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


_COLUMNS = [f.name for f in fields(Kept)]
_STORE = (
    f"INSERT OR REPLACE INTO attrs (path, {', '.join(_COLUMNS)})"
    f" VALUES (?, {', '.join('?' * len(_COLUMNS))})"
)


class LocalAttrs:
    def __init__(self, db: sqlite3.Connection, *, remote_keeps_mtimes: bool = False) -> None:
        self._db = db  # the journal's: one database, one checkpoint, shared transactions
        # A file's mtime the remote keeps is the one to show: it may have been set
        # elsewhere since, on the same version (content).
        self._remote_keeps_mtimes = remote_keeps_mtimes
        self._db.executescript(_SCHEMA)
        self._kept: dict[str, Kept] = {
            row[0]: Kept(*row[1:])
            for row in self._db.execute(f"SELECT path, {', '.join(_COLUMNS)} FROM attrs")
        }

    def remember(self, node: Node, **attrs: int | None) -> None:
        """Keep these attributes (None: leave as is) of `node` at its path."""
        changes: dict[str, int | str | None] = {k: v for k, v in attrs.items() if v is not None}
        if not changes or not node.attached:
            return
        path = node.path
        old = self._kept.get(path, Kept())
        if "atime_ns" in changes or "mtime_ns" in changes:
            if old.version != node.version:  # times of an older version go
                old = replace(old, atime_ns=None, mtime_ns=None)
            changes["version"] = node.version
        self._store(path, replace(old, **changes))  # type: ignore[arg-type]

    def lay_over(self, node: Node, *, owner: bool = True) -> None:
        """Show what was kept for `node`'s path (after a listing made or updated it).
        `owner=False`: not the kept owner (where trust.py decides it)."""
        kept = self._kept.get(node.path)
        if kept is None:
            return
        if kept.mode is not None:  # (an older version kept setuid, setgid and sticky)
            node.mode = kept.mode & MODE_BITS
        if owner and kept.uid is not None:
            node.uid = kept.uid
        if owner and kept.gid is not None:
            node.gid = kept.gid
        if node.is_dir or kept.version == node.version:
            if kept.mtime_ns is not None and not (
                self._remote_keeps_mtimes and node.kind == "file"
            ):
                node.mtime_ns = kept.mtime_ns
            if kept.atime_ns is not None:
                node.atime_ns = kept.atime_ns

    def uploaded(self, node: Node, old: str | None, new: str) -> None:
        """Our own write of `node` landed as `new`: its modification time is the
        write's, not the remote's commit time (rsync's quick check relies on it, across
        remounts too); an access time set on `old` stays set."""
        path = node.path
        kept = self._kept.get(path, Kept())
        atime = kept.atime_ns if kept.version == old else None
        self._store(path, replace(kept, version=new, mtime_ns=node.mtime_ns, atime_ns=atime))

    def moved(self, src: str, dst: str) -> None:
        for path in [p for p in self._kept if p == src or p.startswith(src + "/")]:
            kept = self._kept.pop(path)
            self._write("DELETE FROM attrs WHERE path = ?", [(path,)])
            self._store(dst + path[len(src) :], kept)

    def removed(self, path: str) -> None:
        gone = [p for p in self._kept if p == path or p.startswith(path + "/")]
        for p in gone:
            del self._kept[p]
        if gone:
            self._write("DELETE FROM attrs WHERE path = ?", [(p,) for p in gone])

    def _store(self, path: str, kept: Kept) -> None:
        self._kept[path] = kept
        values = [getattr(kept, c) for c in _COLUMNS]
        self._write(_STORE, [(path, *values)])

    def _write(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as e:
            log.warning("attributes kept in memory only (not saved): %s", e)
