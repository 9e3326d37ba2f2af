"""The Store on one machine: SQLite (WAL) for metadata and small blobs (smallblobs.py),
content-addressed blob files for the others.

This module holds the store itself: the data directory and its lock, the connection and
its transactions, repositories, read queries and blobs. The schema is in
sqlite_schema.py, a commit's write transaction in sqlite_commit.py.

History is kept as row versions: an entry row is visible at head H when
`commit_from <= H < commit_to` (`commit_to` NULL while current), so a listing at any
kept head is one indexed query, and a commit only inserts and closes rows. Rows that no
kept head can see any more are pruned as commits land (`history` commits are kept).
Blobs no kept row references are removed by `collect_garbage` (server/gc.py).

Concurrency: one connection behind one lock. SQLite has a single writer anyway, every
transaction here is short (no content over SMALL_BLOB_MAX passes through the database,
and a group of rows holds at most a pack's or a request's group of bytes), and callers
run store methods in worker threads, so the lock never blocks the event loop. (Small
blob lookups use a read-only connection of their own, see smallblobs.py.)
Durability: `synchronous=FULL`, and a blob is made durable (its row committed, or its file
renamed into place) before the commit that references it, so a crash leaves either the
whole commit or none of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from repomount.paths import shown
from repomount.server import gc
from repomount.server.blobs import BlobDir
from repomount.server.inline import store_contents
from repomount.server.smallblobs import (
    SMALL_BLOB_MAX,
    MemorySpool,
    SmallBlobs,
    new_memory_spool,
    split,
)
from repomount.server.sqlite_commit import run_commit
from repomount.server.sqlite_schema import (
    ENTRY_COLS,
    UPDATED,
    VISIBLE,
    entry_of,
    open_database,
    reclaim,
)
from repomount.server.sqlite_tree import tree_json, tree_rows, tree_where
from repomount.server.store import (
    BlobSpool,
    Change,
    ChangeSet,
    CommitInfo,
    CommitResult,
    Entry,
    GcReport,
    Gone,
    Idempotency,
    InvalidRequest,
    JsonPage,
    Listing,
    NotFound,
    Operation,
    RepoExists,
    RepoInfo,
    Store,
    Write,
)

log = logging.getLogger(__name__)

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
REPO_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class DataDirLocked(RuntimeError):
    pass


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime(ISO_FORMAT)


class SqliteStore(Store):
    def __init__(
        self, root: Path, *, history: int = 100_000, pause_commit_for_test: Path | None = None
    ) -> None:
        if history < 1:
            raise ValueError("history must keep at least one commit")
        self.history = history
        # TEST ONLY (see sqlite_commit.PAUSE_COMMIT_ENV): None everywhere but in a test.
        self._pause_commit_for_test = pause_commit_for_test
        # Every repository's content is in here (small files as rows of meta.sqlite3):
        # for this user alone, whatever the umask. (-wal and -shm take the database's
        # mode.) A directory made open by an older version is said, not changed.
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if root.stat().st_mode & 0o077:
            log.warning("%s can be read by other users: chmod 700 it", root)
        for name in ("lock", "meta.sqlite3"):
            os.close(os.open(root / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._lockfile = (root / "lock").open("a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.close()
            raise DataDirLocked(f"{root} is in use by another repomount server") from None
        self.blobs = BlobDir(root)
        self._lock = threading.Lock()
        self._db = open_database(root / "meta.sqlite3")
        self.small = SmallBlobs(root / "meta.sqlite3")

    def close(self) -> None:
        # What lookups found, those left to the GC too, kept across the restart.
        with self.small.refresh_lock, self._write() as db:
            self.small.fold_refreshes(db)
        with self._lock:
            self._db.close()
        self.small.close()
        self._lockfile.close()

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

    @contextmanager
    def _write_and_refresh(self, named: Collection[str] = ()) -> Iterator[sqlite3.Connection]:
        """A write transaction that also writes the small blobs' pending refresh times
        (taken before the store's lock: the GC takes its refresh lock first). Those of
        the blobs in `named`, which a commit names, are left to the GC once it commits,
        not written (rewriting the rows, up to 64 KiB each, cost a commit of 2,000 files
        found present 30-70 ms): the GC still counts them (see smallblobs.py), as the
        lookup may have been another client's, and the commit's entry may not last."""
        refreshes = self.small.pending_refreshes()
        written = {sha: t for sha, t in refreshes.items() if sha not in named}
        with self._write() as db:
            self.small.write_refreshes(db, written)
            yield db
        self.small.forget_refreshes(written)
        self.small.leave_to_gc({sha: t for sha, t in refreshes.items() if sha in named})

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
                f"invalid repository name {shown(name)}: use 1-100 letters, digits, '.', '_' "
                "or '-', not starting with '.' or '-'"
            )
        created = datetime.now(UTC).strftime(ISO_FORMAT)
        with self._write() as db:
            row = db.execute("SELECT head FROM retired_heads WHERE name = ?", (name,)).fetchone()
            head = 0 if row is None else row[0] + 1  # (a deleted one's: counted on)
            try:
                db.execute(
                    "INSERT INTO repos (name, created_at, head, floor) VALUES (?, ?, ?, ?)",
                    (name, created, head, head),
                )
            except sqlite3.IntegrityError:
                raise RepoExists(f"repository {name!r} already exists") from None
        return RepoInfo(name=name, head=head, created_at=created)

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
            repo_id, head, _ = self._repo(db, name)
            db.execute("DELETE FROM repos WHERE id = ?", (repo_id,))
            db.execute(
                "INSERT INTO retired_heads (name, head) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET head = excluded.head",
                (name, head),
            )

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
                found.append(None if row is None else entry_of(row))
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
        with self._read() as db:
            where, args = self._tree(db, repo, path, recursive, at, after)
            rows = tree_rows(db, where, args, limit)
        entries = [entry_of(r) for r in rows[:limit]]
        return Listing(head=args["at"], entries=entries, more=len(rows) > limit)

    def list_tree_json(
        self,
        repo: str,
        path: str,
        *,
        recursive: bool,
        at: int | None,
        after: str | None,
        limit: int,
    ) -> JsonPage:
        with self._read() as db:
            where, args = self._tree(db, repo, path, recursive, at, after)
            return tree_json(db, where, args, limit)

    def _tree(
        self,
        db: sqlite3.Connection,
        repo: str,
        path: str,
        recursive: bool,
        at: int | None,
        after: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """The condition and arguments of a tree query; NotFound if `path` is not a
        directory at the head read."""
        args: dict[str, Any] = {"at": 0, "path": path, "after": after or ""}
        args["repo"], args["at"] = self._at(db, repo, at)
        if path:
            sql = "SELECT type FROM entries WHERE repo_id = :repo AND path = :path AND "
            row = db.execute(sql + VISIBLE, args).fetchone()
            if row is None or row[0] != "dir":
                raise NotFound(f"{path!r} is not a directory in {repo!r}")
        return tree_where(path, recursive, args), args

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

    def commit_log(self, repo: str, upto: int | None, limit: int) -> list[CommitInfo]:
        with self._read() as db:
            repo_id, head = self._at(db, repo, upto)
            rows = db.execute(
                "SELECT seq, time, message, author FROM commits "
                "WHERE repo_id = ? AND seq <= ? ORDER BY seq DESC LIMIT ?",
                (repo_id, head, limit),
            ).fetchall()
        return [CommitInfo(seq=s, time=t, message=m, author=a) for s, t, m, a in rows]

    # --- blobs --------------------------------------------------------------------------

    def new_spool(self, size: int | None = None) -> BlobSpool:
        if size is not None and size <= SMALL_BLOB_MAX:
            return new_memory_spool()
        return self.blobs.new_spool(size)

    def discard_spool(self, spool: BlobSpool) -> None:
        if isinstance(spool, MemorySpool):
            spool.close()
        else:
            self.blobs.discard(spool)

    def add_blobs(self, spools: Sequence[BlobSpool]) -> list[bool]:
        added = [False] * len(spools)
        small, large = split(spools, self.blobs)
        # A small blob stored as a file before rows existed stays that file (refreshed).
        rows = [(i, sha, data) for i, sha, data in small if not self.blobs.keep(sha)]
        if rows:
            with self._write_and_refresh() as db:
                new = self.small.add(db, [(sha, data) for _, sha, data in rows])
            for (index, _, _), is_new in zip(rows, new, strict=True):
                added[index] = is_new
        if large:
            new = self.blobs.add([spool for _, spool in large])
            for (index, _), is_new in zip(large, new, strict=True):
                added[index] = is_new
        return added

    def has_blob(self, sha256: str) -> bool:
        return self.small.keep(sha256) or self.blobs.keep(sha256)

    def open_blob(self, sha256: str) -> BinaryIO:
        found = self.small.open(sha256)
        if found is not None:
            return found
        try:
            return self.blobs.open(sha256)
        except (FileNotFoundError, ValueError):
            raise NotFound(f"no blob {sha256}") from None

    def collect_garbage(self, grace: float) -> GcReport:
        report = gc.collect(self._write, self.blobs, self.small, history=self.history, grace=grace)
        with self._lock:  # the space of the rows freed above and since, back to the disk
            reclaim(self._db)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report

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
        contents: Mapping[str, bytes] | None = None,
    ) -> CommitResult:
        if not operations:
            raise InvalidRequest("a commit needs at least one operation")
        # Small contents become rows in the commit's own transaction: one sync for a
        # small save, not one for its content and one for the commit. (A small content
        # kept as a file from before rows existed stays that file.)
        contents = contents or {}
        store_contents(self, [c for c in contents.values() if len(c) > SMALL_BLOB_MAX])
        rows = [
            (sha, c)
            for sha, c in contents.items()
            if len(c) <= SMALL_BLOB_MAX and not self.blobs.keep(sha)
        ]
        named = {op.blob for op in operations if isinstance(op, Write)}
        with self._write_and_refresh(named) as db:
            if rows:
                self.small.add(db, rows)
            repo_id, head, floor = self._repo(db, repo)
            # (the small ones in a few queries, not one per write)
            sizes = SmallBlobs.sizes_in(db, named)
            return run_commit(
                db,
                lambda sha: sizes[sha] if sha in sizes else _blob_size(db, self.blobs, sha),
                repo,
                repo_id,
                head,
                floor,
                history=self.history,
                operations=operations,
                message=message,
                author=author,
                idempotency=idempotency,
                base=base,
                pause_marker=self._pause_commit_for_test,
            )


def _blob_size(db: sqlite3.Connection, blobs: BlobDir, sha256: str) -> int | None:
    """A blob's size, looked up inside the write transaction `db` (so that the GC, which
    removes rows under the same lock, cannot take it away before the commit lands)."""
    size = SmallBlobs.size_in(db, sha256)
    return blobs.size(sha256) if size is None else size
