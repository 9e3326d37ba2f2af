"""The durable journal of changes the remote has not acknowledged yet.

SQLite (WAL) in the mount's state directory, plus one content file per pending write
under `blobs/`. A change is durable once its row is committed: that survives a crash or
`kill -9` of the daemon (the OS has the bytes); `sync()` makes it survive a power loss
too. Rows are deleted only when the remote acknowledged the change, so the next mount of
the same remote replays whatever is left, with the same idempotency keys.

The journal is used from the trio thread only (its statements are short local writes),
except `sync()` (an fsync of the WAL and the blobs' directory) and `checkpoint()`, which run
in worker threads (checkpoint() on a connection of its own).

A write the database cannot make (its disk full, failing) is an OSError (ENOSPC, EIO)
and changes nothing: a failed transaction is rolled back, and the records kept in memory
are read again from the database, so memory never holds a change the disk does not.
Room for it when the disk fills up: stateroom.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from repomount.diskfull import is_full
from repomount.remotes.base import Expect, ExpectT
from repomount.vfs.journal_schema import blob_dir, create_schema, journal_path, load_records
from repomount.vfs.records import Op, Record, State, encode_expect
from repomount.vfs.sparse import Sparse
from repomount.vfs.stateroom import StateRoom

log = logging.getLogger(__name__)

SET_ASIDE_FILE = "set-aside.txt"  # beside journal.db: one line per change set aside


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.blob_dir = blob_dir(state_dir)
        self.blob_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db_path = journal_path(state_dir)
        # Created 0600 here, not by SQLite (0644 less the umask): its -wal and -shm
        # files take the database's mode. It names every pending path.
        os.close(os.open(self._db_path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self._db_path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable against crashes; see sync()
        # Checkpoints copy the WAL into the database and fsync it: never on the trio
        # thread. checkpoint() runs them from a worker thread (the flusher, per round).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._in_transaction = False
        self._released: list[str] = []  # content files to delete once committed
        self.room = StateRoom(state_dir)  # for the journal when the disk fills up
        create_schema(self._db)
        self.version = 0  # bumped by every change of the records (progress, for waiters)
        self._load()
        # Ids only grow (AUTOINCREMENT): a record up to this one was journaled by an
        # earlier run of the mount.
        self.earlier_runs_up_to = next(reversed(self._records), 0)
        self._state_dir = state_dir
        missing = [
            r for r in self._records.values() if r.blob and not self.blob_path(r.blob).exists()
        ]
        if missing:
            self.set_aside([r.id for r in missing], "its content file is missing")
        self._remove_orphan_blobs()

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._records)

    def records(self, state: State | None = None) -> list[Record]:
        # _records is in id order: rows are loaded ORDER BY id, added with growing ids,
        # and updated in place (re-assigning a key keeps its position).
        return [r for r in self._records.values() if state is None or r.state == state]

    def any_held(self) -> bool:
        return bool(self._held)

    def added_after(self, rec_id: int) -> list[Record]:
        """The records with ids above `rec_id`, oldest first: a walk back from the
        newest, so a caller that keeps up sees each record once, cheaply."""
        newer = []
        for i in reversed(self._records):
            if i <= rec_id:
                break
            newer.append(self._records[i])
        newer.reverse()
        return newer

    def get(self, rec_id: int) -> Record | None:
        return self._records.get(rec_id)

    def touches(self, path: str) -> bool:
        """Whether a pending change names `path` (as source, target or write)."""
        return path in self._by_path

    def blob_path(self, name: str) -> Path:
        return self.blob_dir / name

    def new_blob_name(self) -> str:
        return uuid.uuid4().hex

    # ------------------------------------------------------------------ writing

    def add(
        self,
        op: Op,
        path: str,
        *,
        dst: str | None = None,
        blob: str | None = None,
        mode: int | None = None,
        expect: ExpectT = Expect.ANY,
        expect_to: ExpectT = Expect.ANY,
        target: str | None = None,
        mtime_ns: int | None = None,
    ) -> Record:
        key = uuid.uuid4().hex
        now = time.time()
        with self.transaction():  # (its errors said as OSErrors)
            cur = self._db.execute(
                "INSERT INTO changes (op, path, dst, blob, mode, expect, expect_to, key,"
                " created, target, mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (op, path, dst, blob, mode, encode_expect(expect), encode_expect(expect_to), key,
                 now, target, mtime_ns),
            )  # fmt: skip
            assert cur.lastrowid is not None
            rec = Record(cur.lastrowid, op, path, dst, blob, mode, expect, expect_to, key, now,
                         target=target, mtime_ns=mtime_ns)  # fmt: skip
            self._index(rec)
        return rec

    def complete(self, ids: Iterable[int]) -> None:
        """The remote has these changes (or they are settled otherwise): forget them
        and the content files nothing else sends."""
        ids = [i for i in ids if i in self._records]
        if not ids:
            return
        with self.transaction():
            self._db.executemany("DELETE FROM changes WHERE id = ?", [(i,) for i in ids])
            for i in ids:
                rec = self._records.pop(i)
                self._unindex(rec)
                if rec.blob and not self.uses_blob(rec.blob):
                    self.release_blob(rec.blob)

    def sparse_of(self, blob: str) -> Sparse | None:
        """The edits `blob` holds, if it is a sparse blob (sparse.py)."""
        return self._sparse.get(blob)

    def mark_sparse(self, blob: str, edits: Sparse) -> None:
        """Before the row that sends `blob` is added (in one transaction with it): a
        crash must never leave a sparse blob looking like whole content."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO sparse (blob, edits) VALUES (?, ?)",
                (blob, edits.to_json()),
            )
            self._sparse[blob] = edits.copy()

    def materialized(self, old: str, new: str) -> None:
        """Sparse blob `old` was laid over its base version as whole content `new`:
        every row sending `old` sends `new` instead."""
        with self.transaction():
            for rec in [r for r in self._records.values() if r.blob == old]:
                self.update(rec, blob=new)
            self._forget_sparse(old)
            self.release_blob(old)

    def _forget_sparse(self, blob: str) -> None:
        if blob in self._sparse:
            with self.transaction():
                self._db.execute("DELETE FROM sparse WHERE blob = ?", (blob,))
                del self._sparse[blob]

    def set_aside(self, ids: Iterable[int], reason: str) -> None:
        """Take changes that can never be sent out of the journal (a crash of an older
        version, or someone, deleted their content file), so that every other change
        still goes: each is logged, kept in the `set_aside` table (shown by status)
        and named in `set-aside.txt` in the state directory."""
        recs = [self._records[i] for i in ids if i in self._records]
        if not recs:
            return
        now = time.time()
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO set_aside (id, op, path, dst, reason, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(r.id, r.op, r.path, r.dst, reason, now) for r in recs],
            )
            self.complete(r.id for r in recs)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        with (self._state_dir / SET_ASIDE_FILE).open("a", encoding="utf-8") as f:
            for r in recs:
                name = f"{r.path} -> {r.dst}" if r.dst else r.path
                f.write(f"{stamp} {r.op} {name!r}: not sent, {reason}\n")
                log.error("pending %s of %r set aside: %s", r.op, name, reason)

    def set_aside_rows(self) -> list[dict[str, object]]:
        """What was set aside, oldest first (for status)."""
        rows = self._db.execute("SELECT op, path, dst, reason, at FROM set_aside ORDER BY at, id")
        return [
            {"op": op, "path": path, **({"to": dst} if dst else {}), "reason": why, "at": at}
            for op, path, dst, why, at in rows
        ]

    def release_blob(self, name: str) -> None:
        """Delete a content file no row sends any more: once the transaction that
        deleted its last row is committed, never before (a crash in between would leave
        a row naming a file that is gone)."""
        self._forget_sparse(name)
        if self._in_transaction:
            self._released.append(name)
        else:
            self.blob_path(name).unlink(missing_ok=True)

    def update(self, rec: Record, **changes: object) -> Record:
        new = replace(rec, **changes)  # type: ignore[arg-type]
        with self.transaction():
            self._update_row(rec, new)
        return new

    def _update_row(self, rec: Record, new: Record) -> None:
        self._db.execute(
            "UPDATE changes SET op=?, path=?, dst=?, blob=?, mode=?, expect=?, expect_to=?,"
            " tries=?, last_error=?, state=?, target=?, next_try=?, held_for=?, mtime_ns=?"
            " WHERE id=?",
            (
                new.op, new.path, new.dst, new.blob, new.mode, encode_expect(new.expect),
                encode_expect(new.expect_to), new.tries, new.last_error, new.state,
                new.target, new.next_try, new.held_for, new.mtime_ns, new.id,
            ),
        )  # fmt: skip
        self._unindex(rec)
        self._index(new)

    def exists_after(self, path: str) -> bool | None:
        """Whether `path` exists once the pending records are applied (None: no record
        decides it, the remote's state stands). A pending rename of a directory above
        it carries what was journaled under the directory's old name."""
        if not self._dir_renamed_above(path, onto=True):  # the common case: only
            # records of this very path count
            exists: bool | None = None
            for rec in self.naming(path):
                exists = rec.dst == path if rec.op == "rename" else rec.op != "delete"
            return exists
        p = path  # newest first, following the renames of its directories back
        for rec in reversed(list(self._records.values())):
            if rec.op == "rename" and rec.dst is not None and p.startswith(rec.dst + "/"):
                p = rec.path + p[len(rec.dst) :]
            elif p in rec.paths():
                return rec.dst == p if rec.op == "rename" else rec.op != "delete"
            elif rec.op in ("delete", "rename") and p.startswith(rec.path + "/"):
                return False  # a directory above it went (or moved away) after
        return None

    def name_after(self, path: str, after: int) -> str | None:
        """The name `path` has once the records newer than id `after` apply: a pending
        rename of a directory above it carries it along. None when one of them deletes
        it or renames it away (what is at the new name then is another story)."""
        name, later = self._later(path, after)
        for rec, p in later:
            if rec.op == "delete" or (rec.op == "rename" and rec.path == p):
                return None
        return name

    def _later(self, path: str, after: int) -> tuple[str, list[tuple[Record, str]]]:
        """The records newer than id `after` that name `path`, each with the name `path`
        has when it applies, and its final name: renames of directories above it move
        the name along. Only walks the whole journal when such a rename is pending."""
        if not self._dir_renamed_above(path, after=after):
            return path, [(rec, path) for rec in self.naming(path) if rec.id > after]
        p, out = path, []
        for rec in self._records.values():
            if rec.id <= after:
                continue
            if rec.op == "rename" and rec.dst is not None and p.startswith(rec.path + "/"):
                p = rec.dst + p[len(rec.path) :]
            elif p in rec.paths():
                out.append((rec, p))
        return p, out

    def _dir_renamed_above(self, path: str, *, after: int = 0, onto: bool = False) -> bool:
        """Whether a pending rename newer than id `after` moves a directory above `path`
        away from its name (or, with `onto`, onto its name)."""
        parts = path.split("/")
        for a in ("/".join(parts[:k]) for k in range(1, len(parts))):
            for rec in self.naming(a):
                if rec.id > after and rec.op == "rename" and (rec.dst if onto else rec.path) == a:
                    return True
        return False

    def retry_now(self, not_before: float = 0.0, ids: Iterable[int] | None = None) -> None:
        """Forget every retry time later than `not_before` (a new mount, or the remote
        answering again, tries at once; the tries count stays, so the backoff grows on
        from where it was); only those of `ids` if given (an fsync while offline)."""
        recs = self.records() if ids is None else [r for i in ids if (r := self.get(i))]
        later = [r for r in recs if r.next_try > not_before]
        if not later:
            return
        with self.transaction():
            if ids is None:
                self._db.execute(
                    "UPDATE changes SET next_try = ? WHERE next_try > ?", (not_before,) * 2
                )
            else:
                self._db.executemany(
                    "UPDATE changes SET next_try = ? WHERE id = ?",
                    [(not_before, r.id) for r in later],
                )
            for rec in later:  # (the path and blob indexes do not change)
                self._records[rec.id] = replace(rec, next_try=not_before)
        self.version += 1

    def naming(self, path: str) -> list[Record]:
        """The records naming `path` (as source, target or write), oldest first."""
        return [self._records[i] for i in sorted(self._by_path.get(path, ()))]

    def rebase(self, path: str, old: ExpectT, new: str, after: int) -> None:
        """Our change at `path` landed as version `new`: later pending changes that
        expected what the landed one expected were chained to it; point them at `new`,
        under whatever name a pending rename of a directory above gave the path.
        The chain ends at a delete of the path or a rename away from it: what comes after
        expects what that one leaves there. (A rename onto the path carries the same
        expectation as the file's later changes there, and is rebased with them.)"""
        for rec, p in self._later(path, after)[1]:
            if rec.path == p and rec.expect == old:
                self.update(rec, expect=new)
            elif rec.op == "rename" and rec.dst == p and rec.expect_to == old:
                self.update(rec, expect_to=new)
            if rec.op == "delete" or (rec.op == "rename" and rec.path == p):
                return

    def latest(self, path: str, op: str) -> Record | None:
        """The newest pending record of kind `op` at `path`."""
        for rec in reversed(self.naming(path)):
            if rec.state == "pending" and rec.op == op and rec.path == path:
                return rec
        return None

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for tables kept beside the journal (attrs.py)."""
        return self._db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction for everything inside (many rows settled at once cost
        one commit, not one each). Never held across an await: a close() journaled by
        another task meanwhile must be committed when it returns."""
        if self._in_transaction:
            yield
            return
        self.room.before_transaction()
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as e:
            raise _os_error(e) from e
        self._in_transaction = True
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            self._in_transaction = False
            self._released.clear()
            self._undo()
            if isinstance(e, sqlite3.Error):
                if is_full(e):
                    self.room.use_reserve()  # (room for the next try)
                raise _os_error(e) from e
            raise
        self._in_transaction = False
        released, self._released = self._released, []
        for name in released:
            if not self.uses_blob(name):  # (unless a row took it up again meanwhile)
                self.blob_path(name).unlink(missing_ok=True)
        if released:
            self.room.after_release()

    def _undo(self) -> None:
        """After a failed transaction: none of it stays, on disk or in memory. (A COMMIT
        that found the disk full may have left the transaction open, or rolled it back.)"""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as e:  # (rolled back already)
                log.warning("journal: rollback after a failed transaction: %s", e)
        self._load()
        self.version += 1

    def checkpoint(self) -> None:
        """Copy the WAL into the database (worker thread, own connection)."""
        con = sqlite3.connect(self._db_path, isolation_level=None)
        try:
            con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            con.close()

    def sync(self) -> None:
        """Make everything journaled so far survive a power loss: the blobs' directory
        and the WAL, whose committed frames a restart replays (synchronous=NORMAL
        leaves only the WAL unsynced at commit; checkpoints sync the database). Runs
        in a worker thread; a checkpoint here would cost a connection and a copy."""
        wal = self._db_path.with_name(self._db_path.name + "-wal")
        for path in (wal, self.blob_dir):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # no WAL: everything is in the database already
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ internals

    def _load(self) -> None:
        """The records and sparse blobs, as the database has them."""
        self._records: dict[int, Record] = {}
        self._blob_refs: Counter[str] = Counter()  # blob -> records sending it
        self._by_path: dict[str, dict[int, None]] = {}  # path -> ids naming it, in order
        self._held: set[int] = set()  # (a waiter asks whether any is held, often)
        for rec in load_records(self._db):
            self._index(rec)
        # blob -> the edits it holds of a content never seen (sparse.py): sent only
        # once laid over the base version it names
        self._sparse: dict[str, Sparse] = {
            blob: Sparse.from_json(edits)
            for blob, edits in self._db.execute("SELECT blob, edits FROM sparse")
        }

    def _index(self, rec: Record) -> None:
        self.version += 1
        self._records[rec.id] = rec
        for p in rec.paths():
            self._by_path.setdefault(p, {})[rec.id] = None
        if rec.blob:
            self._blob_refs[rec.blob] += 1
        if rec.state == "held":
            self._held.add(rec.id)

    def _unindex(self, rec: Record) -> None:
        self.version += 1
        self._held.discard(rec.id)
        for p in rec.paths():
            ids = self._by_path.get(p)
            if ids is not None:
                ids.pop(rec.id, None)
                if not ids:
                    del self._by_path[p]
        if rec.blob:
            self._blob_refs[rec.blob] -= 1
            if self._blob_refs[rec.blob] <= 0:
                del self._blob_refs[rec.blob]

    def uses_blob(self, name: str, excluding: set[int] | frozenset[int] = frozenset()) -> bool:
        """Whether a record (other than `excluding`) sends content file `name`."""
        refs = self._blob_refs.get(name, 0)
        refs -= sum(1 for i in excluding if (r := self._records.get(i)) and r.blob == name)
        return refs > 0

    def _remove_orphan_blobs(self) -> None:
        """Content files with no row: written before a crash that came before the row."""
        used = {r.blob for r in self._records.values() if r.blob}
        for f in self.blob_dir.iterdir():
            if f.name not in used:
                f.unlink(missing_ok=True)
        for blob in [b for b in self._sparse if b not in used]:
            self._forget_sparse(blob)


def _os_error(e: sqlite3.Error) -> OSError:
    """What a failed journal write is to the program that caused it."""
    code = errno.ENOSPC if is_full(e) else errno.EIO
    return OSError(code, f"the journal in the state directory could not be written: {e}")
