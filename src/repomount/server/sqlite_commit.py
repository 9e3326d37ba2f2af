"""A commit as one SQLite write transaction, for SqliteStore.

Inside the transaction the store opened: replay an idempotent retry, check the base,
apply the operations as row versions (insert new rows, close replaced ones), record the
commit, its changes and the new head, prune what no kept head can see, and remember
the result under its idempotency key. Everything lands when the caller's transaction
commits, or nothing does.

It also holds a test-only pause point (see `PAUSE_COMMIT_ENV`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from repomount.paths import InvalidPathError, ancestors_of, parent_of, shown, validate_path
from repomount.server.sqlite_in import rows_in
from repomount.server.sqlite_schema import ENTRY_COLS, entry_of
from repomount.server.store import (
    ABSENT,
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    PRESENT,
    SYMLINK_MODE,
    ChangeOp,
    CommitResult,
    Conflict,
    Delete,
    DirectoryNotEmpty,
    Entry,
    Idempotency,
    IdempotencyConflict,
    InvalidPath,
    InvalidRequest,
    Mkdir,
    NotFound,
    Operation,
    OpResult,
    PathConflict,
    PreconditionFailure,
    Rename,
    StaleBase,
    StoreError,
    Symlink,
    UnknownBlob,
    Write,
    check_symlink_target,
    sha256_hex,
)

IDEMPOTENCY_TTL = 24 * 3600.0
# A blob's size, None when it is not stored (looked up inside the commit's transaction).
BlobSize = Callable[[str], int | None]

# TEST ONLY. `repomount serve` started with REPOMOUNT_TEST_PAUSE_COMMIT=<absolute path>
# makes every commit, once all its rows are written and before its transaction commits,
# create that file and then block (holding the store's lock) until the process is killed,
# so that a test can kill -9 the server at exactly that point and check that nothing of
# the commit survives. Only `run.serve` reads the variable, and it warns loudly when set;
# there is no command-line flag for it. Never set it anywhere but in a test.
PAUSE_COMMIT_ENV = "REPOMOUNT_TEST_PAUSE_COMMIT"
# A paused commit that nobody kills gives up after this long, rolling back (a safety
# net for a test that failed before its kill, not part of the contract).
PAUSE_LIMIT = 300.0


def pause_marker_for_test(environ: Mapping[str, str] | None = None) -> Path | None:
    """TEST ONLY: the marker file of the pause point, from REPOMOUNT_TEST_PAUSE_COMMIT;
    None when it is unset or empty. ValueError when it is not an absolute path."""
    value = (os.environ if environ is None else environ).get(PAUSE_COMMIT_ENV, "")
    if not value:
        return None
    marker = Path(value)
    if not marker.is_absolute():
        raise ValueError(f"{PAUSE_COMMIT_ENV} must be an absolute path, not {value!r}")
    return marker


def _pause_for_test(marker: Path) -> None:
    """TEST ONLY: say "paused" by creating `marker`, then wait to be killed."""
    marker.touch()
    deadline = time.monotonic() + PAUSE_LIMIT
    while time.monotonic() < deadline:
        time.sleep(0.1)
    raise RuntimeError(f"{PAUSE_COMMIT_ENV}: not killed within {PAUSE_LIMIT:.0f} s")


def run_commit(
    db: sqlite3.Connection,
    blob_size: BlobSize,
    repo: str,
    repo_id: int,
    head: int,
    floor: int,
    *,
    history: int,
    operations: Sequence[Operation],
    message: str,
    author: str,
    idempotency: Idempotency | None,
    base: int | None,
    pause_marker: Path | None = None,
) -> CommitResult:
    """Commit `operations` on top of `head` inside the open write transaction `db`.

    `floor` is the oldest head kept before this commit; `history` how many commits to
    keep. A replayed idempotent retry answers the first result and writes nothing new.
    `pause_marker` is for tests only (PAUSE_COMMIT_ENV); None in production.
    """
    now_ns = time.time_ns()
    now = now_ns / 1e9
    if idempotency is not None:
        replay = _replay(db, repo_id, idempotency, now)
        if replay is not None:
            return replay
    if base is not None and base != head:
        raise StaleBase(f"{repo!r} is at head {head}, not {base}", head=str(head))
    seq = head + 1
    tx = _Commit(db, repo_id, seq, now_ns, blob_size)
    results = tx.apply(operations)
    db.execute(
        "INSERT INTO commits (repo_id, seq, time, message, author) VALUES (?, ?, ?, ?, ?)",
        (repo_id, seq, now, message, author),
    )
    db.executemany(
        "INSERT INTO changes (repo_id, seq, idx, path, op, version) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (repo_id, seq, i, path, op, version)
            for i, (path, (op, version)) in enumerate(tx.changes.items())
        ],
    )
    floor = max(floor, seq - history)
    db.execute("UPDATE repos SET head = ?, floor = ? WHERE id = ?", (seq, floor, repo_id))
    prune(db, repo_id, floor)
    result = CommitResult(head=seq, results=results)
    if idempotency is not None:
        db.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
            (repo_id, idempotency.key, idempotency.fingerprint, _dump(result), now),
        )
    if pause_marker is not None:
        _pause_for_test(pause_marker)
    return result


def _replay(
    db: sqlite3.Connection, repo_id: int, idem: Idempotency, now: float
) -> CommitResult | None:
    db.execute("DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL,))
    row = db.execute(
        "SELECT fingerprint, result FROM idempotency WHERE repo_id = ? AND key = ?",
        (repo_id, idem.key),
    ).fetchone()
    if row is None:
        return None
    if row[0] != idem.fingerprint:
        raise IdempotencyConflict(
            f"idempotency key {idem.key!r} was already used for a different request"
        )
    return _load(row[1])


def prune(db: sqlite3.Connection, repo_id: int, floor: int) -> None:
    """Drop the rows no head from `floor` on can see (also used by the GC)."""
    db.execute(
        "DELETE FROM entries WHERE repo_id = ? AND commit_to IS NOT NULL AND commit_to <= ?",
        (repo_id, floor),
    )
    db.execute("DELETE FROM changes WHERE repo_id = ? AND seq <= ?", (repo_id, floor))
    db.execute("DELETE FROM commits WHERE repo_id = ? AND seq < ?", (repo_id, floor))


def _dump(result: CommitResult) -> str:
    return json.dumps(
        {
            "head": result.head,
            "results": [[r.path, r.version, r.created] for r in result.results],
        }
    )


def _load(text: str) -> CommitResult:
    data = json.loads(text)
    return CommitResult(
        head=data["head"],
        results=[OpResult(path=p, version=v, created=c) for p, v, c in data["results"]],
        replayed=True,
    )


class _Commit:
    """Applies operations inside an open write transaction, recording changes."""

    def __init__(
        self, db: sqlite3.Connection, repo_id: int, seq: int, now_ns: int, blob_size: BlobSize
    ) -> None:
        self.db = db
        self.repo_id = repo_id
        self.seq = seq
        self.now = now_ns  # every entry the commit makes without a time of its own has this
        self.blob_size = blob_size
        self.changes: dict[str, tuple[ChangeOp, str | None]] = {}
        self.conflicts: list[PreconditionFailure] = []
        # Directories this commit found or made, so that a batch of files in a few
        # directories looks each one up once, not once per file. A delete or a rename
        # (the only operations that can take a directory away) forgets them all.
        self._dirs: set[str] = set()
        # The current entry (None: nothing) of paths known without a query: those the
        # batch's writes name, read in a few queries up front, then kept exact by every
        # row this commit inserts or closes (_insert, _close).
        self._known: dict[str, Entry | None] = {}

    def apply(self, operations: Sequence[Operation]) -> list[OpResult]:
        self._read_ahead([op.path for op in operations if isinstance(op, Write | Symlink)])
        results = []
        for index, op in enumerate(operations):
            try:
                results.append(self._apply_one(index, op))
            except StoreError as error:
                # A failed precondition earlier may explain this error: report those first.
                if self.conflicts:
                    raise Conflict(self.conflicts) from error
                error.details.setdefault("index", index)
                raise
        if self.conflicts:
            raise Conflict(self.conflicts)
        return results

    def _apply_one(self, index: int, op: Operation) -> OpResult:
        if isinstance(op, Write):
            return self._write(index, op)
        if isinstance(op, Delete):
            return self._delete(index, op)
        if isinstance(op, Rename):
            return self._rename(index, op)
        if isinstance(op, Symlink):
            return self._symlink(index, op)
        return self._mkdir(op)

    # --- the operations ---

    def _write(self, index: int, op: Write) -> OpResult:
        self._make_parents(op.path)
        cur = self._get(op.path)
        if cur is not None and cur.type == "dir":
            raise PathConflict(f"cannot write {op.path!r}: it is a directory", path=op.path)
        self._check(index, op.path, op.expect, cur)
        # After the precondition: a write naming the blob of the version it expects
        # (a new mode or mtime, nothing uploaded) whose file moved on is a conflict,
        # even once that blob is collected.
        size = self.blob_size(op.blob)
        if size is None:
            raise UnknownBlob(f"blob {op.blob} has not been uploaded", blob=op.blob)
        mode = op.mode
        if mode is None:  # keep the mode of a replaced file (not of a replaced symlink)
            mode = cur.mode if cur is not None and cur.type == "file" else DEFAULT_FILE_MODE
        mtime_ns = self.now if op.mtime_ns is None else op.mtime_ns
        if cur is not None:
            self._close(op.path)
        self._insert(Entry(op.path, "file", size, op.blob, mtime_ns, mode))
        self.changes[op.path] = ("write", op.blob)
        return OpResult(op.path, op.blob, created=cur is None)

    def _symlink(self, index: int, op: Symlink) -> OpResult:
        target = check_symlink_target(op.target)
        version = sha256_hex(target)
        self._make_parents(op.path)
        cur = self._get(op.path)
        if cur is not None and cur.type == "dir":
            raise PathConflict(f"cannot make symlink {op.path!r}: it is a directory", path=op.path)
        self._check(index, op.path, op.expect, cur)
        if cur is not None:
            self._close(op.path)
        self._insert(
            Entry(op.path, "symlink", len(target), version, self.now, SYMLINK_MODE, op.target)
        )
        self.changes[op.path] = ("write", version)
        return OpResult(op.path, version, created=cur is None)

    def _delete(self, index: int, op: Delete) -> OpResult:
        self._dirs.clear()
        cur = self._get(op.path)
        if cur is None and op.expect is None:
            raise NotFound(f"cannot delete {op.path!r}: it does not exist", path=op.path)
        self._check(index, op.path, op.expect, cur)
        if cur is None:
            return OpResult(op.path, None, created=False)
        if cur.type == "dir" and self._has_children(op.path):
            raise DirectoryNotEmpty(
                f"cannot delete directory {op.path!r}: it is not empty", path=op.path
            )
        self._close(op.path)
        self.changes[op.path] = ("delete", None)
        return OpResult(op.path, None, created=False)

    def _rename(self, index: int, op: Rename) -> OpResult:
        src, dst = op.src, op.dst
        self._dirs.clear()
        if dst.startswith(src + "/"):
            raise InvalidRequest(f"cannot move {src!r} into itself ({dst!r})", path=dst)
        cur = self._get(src)
        if cur is None and op.expect is None:
            raise NotFound(f"cannot rename {src!r}: it does not exist", path=src)
        self._check(index, src, op.expect, cur)
        if cur is None:
            return OpResult(dst, None, created=False)
        if src == dst:
            return OpResult(dst, cur.version, created=False)
        self._make_parents(dst)
        target = self._get(dst)
        if op.expect_to is not None:
            self._check(index, dst, op.expect_to, target)
        if target is not None:
            if (target.type == "dir") != (cur.type == "dir"):  # a symlink counts as a file
                raise PathConflict(
                    f"cannot rename {cur.type} {src!r} onto {target.type} {dst!r}", path=dst
                )
            if target.type == "dir" and self._has_children(dst):
                raise DirectoryNotEmpty(
                    f"cannot rename onto directory {dst!r}: it is not empty", path=dst
                )
            self._close(dst)
        moved = [cur]
        if cur.type == "dir":
            moved += self._subtree(src)
            for entry in moved:  # (a path below must stay one every listing can show)
                try:
                    validate_path(dst + entry.path[len(src) :])
                except InvalidPathError as e:
                    raise InvalidPath(
                        f"cannot rename {shown(src)} to {shown(dst)}: {e}", path=dst
                    ) from None
        for entry in moved:
            self._close(entry.path)
            self.changes[entry.path] = ("delete", None)
        for entry in moved:
            new_path = dst + entry.path[len(src) :]
            self._insert(dataclasses.replace(entry, path=new_path))
            is_dir = entry.type == "dir"
            self.changes[new_path] = ("mkdir", None) if is_dir else ("write", entry.version)
        return OpResult(dst, cur.version, created=target is None)

    def _mkdir(self, op: Mkdir) -> OpResult:
        self._make_parents(op.path)
        cur = self._get(op.path)
        if cur is not None:
            if cur.type != "dir":
                raise PathConflict(f"cannot mkdir {op.path!r}: it is a {cur.type}", path=op.path)
            return OpResult(op.path, None, created=False)
        self._insert(Entry(op.path, "dir", 0, None, self.now, DEFAULT_DIR_MODE))
        self.changes[op.path] = ("mkdir", None)
        return OpResult(op.path, None, created=True)

    # --- helpers ---

    def _check(self, index: int, path: str, expect: str | None, cur: Entry | None) -> None:
        if expect is None:
            return
        if expect == ABSENT:
            ok = cur is None
        elif expect == PRESENT:
            ok = cur is not None
        else:
            ok = cur is not None and cur.version == expect
        if not ok:
            current = None if cur is None else cur.version
            self.conflicts.append(PreconditionFailure(index, path, expect, current))

    def _make_parents(self, path: str) -> None:
        for parent in ancestors_of(path):
            if parent in self._dirs:
                continue
            cur = self._get(parent)
            if cur is None:
                self._insert(Entry(parent, "dir", 0, None, self.now, DEFAULT_DIR_MODE))
                self.changes[parent] = ("mkdir", None)
            elif cur.type != "dir":  # a symlink is never followed
                raise PathConflict(
                    f"cannot create {path!r}: {parent!r} is a {cur.type}", path=path, file=parent
                )
            self._dirs.add(parent)

    def _read_ahead(self, paths: Sequence[str]) -> None:
        """The current entries of `paths` (None where there is none)."""
        self._known.update(dict.fromkeys(paths))
        sql = (
            f"SELECT {ENTRY_COLS} FROM entries "
            "WHERE repo_id = ? AND path IN ({marks}) AND commit_to IS NULL"
        )
        for row in rows_in(self.db, sql, paths, self.repo_id):
            entry = entry_of(row)
            self._known[entry.path] = entry

    def _get(self, path: str) -> Entry | None:
        if path in self._known:
            return self._known[path]
        row = self.db.execute(
            f"SELECT {ENTRY_COLS} FROM entries "
            "WHERE repo_id = ? AND path = ? AND commit_to IS NULL",
            (self.repo_id, path),
        ).fetchone()
        return None if row is None else entry_of(row)

    def _has_children(self, path: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM entries WHERE repo_id = ? AND parent = ? AND commit_to IS NULL LIMIT 1",
            (self.repo_id, path),
        ).fetchone()
        return row is not None

    def _subtree(self, path: str) -> list[Entry]:
        rows = self.db.execute(
            f"SELECT {ENTRY_COLS} FROM entries WHERE repo_id = ? AND path > ? AND path < ? "
            "AND commit_to IS NULL ORDER BY path",
            (self.repo_id, path + "/", path + "0"),
        ).fetchall()
        return [entry_of(r) for r in rows]

    def _close(self, path: str) -> None:
        self._known[path] = None
        # A row born in this very commit was never visible at any head: drop it.
        self.db.execute(
            "DELETE FROM entries WHERE repo_id = ? AND path = ? AND commit_to IS NULL "
            "AND commit_from = ?",
            (self.repo_id, path, self.seq),
        )
        self.db.execute(
            "UPDATE entries SET commit_to = ? WHERE repo_id = ? AND path = ? AND commit_to IS NULL",
            (self.seq, self.repo_id, path),
        )

    def _insert(self, e: Entry) -> None:
        self._known[e.path] = e
        self.db.execute(
            "INSERT INTO entries (repo_id, path, parent, type, blob, size, mode, mtime, "
            "commit_from, target, mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.repo_id,
                e.path,
                parent_of(e.path),
                e.type,
                e.version,
                e.size,
                e.mode,
                e.mtime,
                self.seq,
                e.target,
                e.mtime_ns,
            ),
        )
