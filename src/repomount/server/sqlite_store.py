"""The Store on one machine: SQLite (WAL) for metadata, content-addressed blob files.

History is kept as row versions: an entry row is visible at head H when
`commit_from <= H < commit_to` (`commit_to` NULL while current), so a listing at any
kept head is one indexed query, and a commit only inserts and closes rows. Rows that no
kept head can see any more are pruned as commits land (`history` commits are kept).

Concurrency: one connection behind one lock. SQLite has a single writer anyway, every
transaction here is short (file content never passes through the database), and callers
run store methods in worker threads, so the lock never blocks the event loop.
Durability: `synchronous=FULL`, and a blob is fsynced and renamed into place before the
commit that references it, so a crash leaves either the whole commit or none of it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from repomount.paths import ancestors_of, parent_of
from repomount.server.blobs import BlobDir
from repomount.server.store import (
    ABSENT,
    DEFAULT_DIR_MODE,
    DEFAULT_FILE_MODE,
    PRESENT,
    SYMLINK_MODE,
    BlobSpool,
    Change,
    ChangeOp,
    ChangeSet,
    CommitResult,
    Conflict,
    Delete,
    DirectoryNotEmpty,
    Entry,
    Gone,
    Idempotency,
    IdempotencyConflict,
    InvalidRequest,
    Listing,
    Mkdir,
    NotFound,
    Operation,
    OpResult,
    PathConflict,
    PreconditionFailure,
    Rename,
    RepoExists,
    RepoInfo,
    StaleBase,
    Store,
    StoreError,
    Symlink,
    UnknownBlob,
    Write,
    check_symlink_target,
    sha256_hex,
)

IDEMPOTENCY_TTL = 24 * 3600.0
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
REPO_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")

# A symlink's row holds its target, and in `blob` its version (SHA-256 of the target;
# no blob file backs it: the target is read from the row).
ENTRIES = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('file', 'dir', 'symlink')),
    blob TEXT,
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime REAL NOT NULL,
    commit_from INTEGER NOT NULL,
    commit_to INTEGER,
    target TEXT
);"""
# Columns an entries table had before symlinks (a data directory from then is migrated).
OLD_ENTRY_COLUMNS = (
    "id, repo_id, path, parent, type, blob, size, mode, mtime, commit_from, commit_to"
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    floor INTEGER NOT NULL DEFAULT 0  -- oldest head still answerable (at=, since=)
);
CREATE TABLE IF NOT EXISTS commits (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    PRIMARY KEY (repo_id, seq)
);
{ENTRIES}
CREATE UNIQUE INDEX IF NOT EXISTS entries_current
    ON entries (repo_id, path) WHERE commit_to IS NULL;
CREATE INDEX IF NOT EXISTS entries_path ON entries (repo_id, path, commit_from);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (repo_id, parent, path);
CREATE INDEX IF NOT EXISTS entries_closed
    ON entries (repo_id, commit_to) WHERE commit_to IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    op TEXT NOT NULL,
    version TEXT,
    PRIMARY KEY (repo_id, seq, idx)
);
CREATE TABLE IF NOT EXISTS idempotency (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (repo_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created);
CREATE TABLE IF NOT EXISTS repo_attrs (
    repo_id INTEGER NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (repo_id, key)
);
""".replace("{ENTRIES}", ENTRIES.format(name="entries"))

# Visible at head :at (also used with the current head, which is simply a kept head).
VISIBLE = "commit_from <= :at AND (commit_to IS NULL OR commit_to > :at)"
ENTRY_COLS = "path, type, size, blob, mtime, mode, target"
# The time of a repository's head commit (always kept: pruning stops at the floor).
UPDATED = "(SELECT time FROM commits WHERE repo_id = repos.id AND seq = repos.head)"


class DataDirLocked(RuntimeError):
    pass


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime(ISO_FORMAT)


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> Entry:
    path, typ, size, blob, mtime, mode, target = row
    return Entry(
        path=path, type=typ, size=size, version=blob, mtime=mtime, mode=mode, target=target
    )


class SqliteStore(Store):
    def __init__(self, root: Path, *, history: int = 100_000) -> None:
        if history < 1:
            raise ValueError("history must keep at least one commit")
        self.history = history
        root.mkdir(parents=True, exist_ok=True)
        self._lockfile = (root / "lock").open("a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise DataDirLocked(f"{root} is in use by another repomount server") from None
        self.blobs = BlobDir(root)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            root / "meta.sqlite3", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lockfile.close()

    def _migrate(self) -> None:
        """Bring an entries table from before symlinks up to date: SQLite cannot change
        a CHECK constraint in place, so the table is copied into a new one (one
        transaction; the indexes are created again by SCHEMA)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if not columns or "target" in columns:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(ENTRIES.format(name="entries_new"))
            self._db.execute(
                f"INSERT INTO entries_new ({OLD_ENTRY_COLUMNS}) "
                f"SELECT {OLD_ENTRY_COLUMNS} FROM entries"
            )
            self._db.execute("DROP TABLE entries")
            self._db.execute("ALTER TABLE entries_new RENAME TO entries")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- plumbing ---------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _repo(self, db: sqlite3.Connection, name: str) -> tuple[int, int, int]:
        """(id, head, floor) of a repository; the floor honours the current --history."""
        row = db.execute("SELECT id, head, floor FROM repos WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no repository named {name!r}")
        repo_id, head, floor = row
        return repo_id, head, max(floor, head - self.history)

    def _at(self, db: sqlite3.Connection, repo: str, at: int | None) -> tuple[int, int]:
        """(repo id, head to read at), checking that `at` is within the kept history."""
        repo_id, head, floor = self._repo(db, repo)
        if at is None:
            return repo_id, head
        if at > head:
            raise NotFound(f"repository {repo!r} has no commit {at} (its head is {head})")
        if at < floor:
            raise Gone(
                f"commit {at} is older than the kept history of {repo!r} (oldest is {floor})",
                oldest=str(floor),
            )
        return repo_id, at

    # --- repositories -----------------------------------------------------------------

    def list_repos(self) -> list[RepoInfo]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT name, head, created_at, {UPDATED} FROM repos ORDER BY name"
            ).fetchall()
        return [RepoInfo(name=n, head=h, created_at=c, updated_at=_iso(u)) for n, h, c, u in rows]

    def create_repo(self, name: str) -> RepoInfo:
        if not isinstance(name, str) or not REPO_NAME_RE.fullmatch(name):
            raise InvalidRequest(
                f"invalid repository name {name!r}: use 1-100 letters, digits, '.', '_' "
                "or '-', not starting with '.' or '-'"
            )
        created = datetime.now(UTC).strftime(ISO_FORMAT)
        with self._write() as db:
            try:
                db.execute("INSERT INTO repos (name, created_at) VALUES (?, ?)", (name, created))
            except sqlite3.IntegrityError:
                raise RepoExists(f"repository {name!r} already exists") from None
        return RepoInfo(name=name, head=0, created_at=created)

    def repo_info(self, name: str) -> RepoInfo:
        with self._read() as db:
            repo_id, head, _ = self._repo(db, name)
            created_at, updated = db.execute(
                f"SELECT created_at, {UPDATED} FROM repos WHERE id = ?", (repo_id,)
            ).fetchone()
            count, total = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM entries "
                "WHERE repo_id = ? AND commit_to IS NULL AND type = 'file'",
                (repo_id,),
            ).fetchone()
        return RepoInfo(
            name=name,
            head=head,
            created_at=created_at,
            file_count=count,
            bytes=total,
            updated_at=_iso(updated),
        )

    def delete_repo(self, name: str) -> None:
        with self._write() as db:
            repo_id, _, _ = self._repo(db, name)
            db.execute("DELETE FROM repos WHERE id = ?", (repo_id,))

    def repo_attrs(self, name: str) -> dict[str, str]:
        with self._read() as db:
            repo_id, _, _ = self._repo(db, name)
            rows = db.execute("SELECT key, value FROM repo_attrs WHERE repo_id = ?", (repo_id,))
            return dict(rows.fetchall())

    def set_repo_attrs(self, name: str, attrs: Mapping[str, str | None]) -> None:
        with self._write() as db:
            repo_id, _, _ = self._repo(db, name)
            for key, value in attrs.items():
                if value is None:
                    db.execute(
                        "DELETE FROM repo_attrs WHERE repo_id = ? AND key = ?", (repo_id, key)
                    )
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO repo_attrs VALUES (?, ?, ?)", (repo_id, key, value)
                    )

    # --- reads --------------------------------------------------------------------------

    def head(self, repo: str) -> int:
        with self._read() as db:
            return self._repo(db, repo)[1]

    def stat(self, repo: str, path: str, at: int | None = None) -> tuple[int, Entry | None]:
        head, entries = self.stat_many(repo, [path], at)
        return head, entries[0]

    def stat_many(
        self, repo: str, paths: Sequence[str], at: int | None = None
    ) -> tuple[int, list[Entry | None]]:
        with self._read() as db:
            repo_id, head = self._at(db, repo, at)
            found = []
            for path in paths:
                row = db.execute(
                    f"SELECT {ENTRY_COLS} FROM entries "
                    f"WHERE repo_id = :repo AND path = :path AND {VISIBLE}",
                    {"repo": repo_id, "path": path, "at": head},
                ).fetchone()
                found.append(None if row is None else _entry(row))
        return head, found

    def list_tree(
        self,
        repo: str,
        path: str,
        *,
        recursive: bool,
        at: int | None,
        after: str | None,
        limit: int,
    ) -> Listing:
        args: dict[str, Any] = {"at": 0, "path": path, "after": after or "", "limit": limit + 1}
        with self._read() as db:
            args["repo"], args["at"] = self._at(db, repo, at)
            if path:
                sql = "SELECT type FROM entries WHERE repo_id = :repo AND path = :path AND "
                row = db.execute(sql + VISIBLE, args).fetchone()
                if row is None or row[0] != "dir":
                    raise NotFound(f"{path!r} is not a directory in {repo!r}")
            if recursive:
                # Everything strictly between "P/" and "P0" ('0' follows '/') is below P.
                where = "path > :after"
                if path:
                    where += " AND path > :lo AND path < :hi"
                    args.update(lo=path + "/", hi=path + "0")
            else:
                where = "parent = :path AND path > :after"
            rows = db.execute(
                f"SELECT {ENTRY_COLS} FROM entries WHERE repo_id = :repo AND {where} "
                f"AND {VISIBLE} ORDER BY path LIMIT :limit",
                args,
            ).fetchall()
        entries = [_entry(r) for r in rows[:limit]]
        return Listing(head=args["at"], entries=entries, more=len(rows) > limit)

    def changes(self, repo: str, since: int, limit: int) -> ChangeSet:
        with self._read() as db:
            repo_id, head, floor = self._repo(db, repo)
            if since < floor or since > head:
                raise Gone(
                    f"changes since {since} are not available for {repo!r} "
                    f"(kept history is {floor}..{head}); list the tree again",
                    oldest=str(floor),
                    head=str(head),
                )
            if since == head:
                return ChangeSet(head=head, changes=[])
            # The last commit to include: the one holding the limit-th change, whole.
            row = db.execute(
                "SELECT seq FROM changes WHERE repo_id = ? AND seq > ? "
                "ORDER BY seq, idx LIMIT 1 OFFSET ?",
                (repo_id, since, max(limit - 1, 0)),
            ).fetchone()
            upto = head if row is None else row[0]
            rows = db.execute(
                "SELECT seq, path, op, version FROM changes "
                "WHERE repo_id = ? AND seq > ? AND seq <= ? ORDER BY seq, idx",
                (repo_id, since, upto),
            ).fetchall()
        return ChangeSet(
            head=upto, changes=[Change(head=s, path=p, op=o, version=v) for s, p, o, v in rows]
        )

    # --- blobs --------------------------------------------------------------------------

    def new_spool(self) -> BlobSpool:
        return self.blobs.new_spool()

    def discard_spool(self, spool: BlobSpool) -> None:
        self.blobs.discard(spool)

    def add_blobs(self, spools: Sequence[BlobSpool]) -> list[bool]:
        return self.blobs.add(spools)

    def has_blob(self, sha256: str) -> bool:
        return self.blobs.size(sha256) is not None

    def open_blob(self, sha256: str) -> BinaryIO:
        try:
            return self.blobs.open(sha256)
        except (FileNotFoundError, ValueError):
            raise NotFound(f"no blob {sha256}") from None

    # --- writes -------------------------------------------------------------------------

    def commit(
        self,
        repo: str,
        operations: Sequence[Operation],
        *,
        message: str = "",
        author: str = "",
        idempotency: Idempotency | None = None,
        base: int | None = None,
    ) -> CommitResult:
        if not operations:
            raise InvalidRequest("a commit needs at least one operation")
        with self._write() as db:
            repo_id, head, floor = self._repo(db, repo)
            now = time.time()
            if idempotency is not None:
                replay = self._replay(db, repo_id, idempotency, now)
                if replay is not None:
                    return replay
            if base is not None and base != head:
                raise StaleBase(f"{repo!r} is at head {head}, not {base}", head=str(head))
            seq = head + 1
            tx = _Commit(db, repo_id, seq, now, self.blobs)
            results = tx.apply(operations)
            db.execute(
                "INSERT INTO commits (repo_id, seq, time, message, author) VALUES (?, ?, ?, ?, ?)",
                (repo_id, seq, now, message, author),
            )
            db.executemany(
                "INSERT INTO changes (repo_id, seq, idx, path, op, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (repo_id, seq, i, path, op, version)
                    for i, (path, (op, version)) in enumerate(tx.changes.items())
                ],
            )
            floor = max(floor, seq - self.history)
            db.execute("UPDATE repos SET head = ?, floor = ? WHERE id = ?", (seq, floor, repo_id))
            self._prune(db, repo_id, floor)
            result = CommitResult(head=seq, results=results)
            if idempotency is not None:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
                    (repo_id, idempotency.key, idempotency.fingerprint, _dump(result), now),
                )
            return result

    def _replay(
        self, db: sqlite3.Connection, repo_id: int, idem: Idempotency, now: float
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

    def _prune(self, db: sqlite3.Connection, repo_id: int, floor: int) -> None:
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
        self, db: sqlite3.Connection, repo_id: int, seq: int, now: float, blobs: BlobDir
    ) -> None:
        self.db = db
        self.repo_id = repo_id
        self.seq = seq
        self.now = now
        self.blobs = blobs
        self.changes: dict[str, tuple[ChangeOp, str | None]] = {}
        self.conflicts: list[PreconditionFailure] = []

    def apply(self, operations: Sequence[Operation]) -> list[OpResult]:
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
        size = self.blobs.size(op.blob)
        if size is None:
            raise UnknownBlob(f"blob {op.blob} has not been uploaded", blob=op.blob)
        self._make_parents(op.path)
        cur = self._get(op.path)
        if cur is not None and cur.type == "dir":
            raise PathConflict(f"cannot write {op.path!r}: it is a directory", path=op.path)
        self._check(index, op.path, op.expect, cur)
        mode = op.mode
        if mode is None:  # keep the mode of a replaced file (not of a replaced symlink)
            mode = cur.mode if cur is not None and cur.type == "file" else DEFAULT_FILE_MODE
        if cur is not None:
            self._close(op.path)
        self._insert(Entry(op.path, "file", size, op.blob, self.now, mode))
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
            cur = self._get(parent)
            if cur is None:
                self._insert(Entry(parent, "dir", 0, None, self.now, DEFAULT_DIR_MODE))
                self.changes[parent] = ("mkdir", None)
            elif cur.type != "dir":  # a symlink is never followed
                raise PathConflict(
                    f"cannot create {path!r}: {parent!r} is a {cur.type}", path=path, file=parent
                )

    def _get(self, path: str) -> Entry | None:
        row = self.db.execute(
            f"SELECT {ENTRY_COLS} FROM entries "
            "WHERE repo_id = ? AND path = ? AND commit_to IS NULL",
            (self.repo_id, path),
        ).fetchone()
        return None if row is None else _entry(row)

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
        return [_entry(r) for r in rows]

    def _close(self, path: str) -> None:
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
        self.db.execute(
            "INSERT INTO entries (repo_id, path, parent, type, blob, size, mode, mtime, "
            "commit_from, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
