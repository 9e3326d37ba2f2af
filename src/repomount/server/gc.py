"""Blob garbage collection: what no kept history references, and nobody uploaded lately.

Retention. A blob stays while any entry row of the kept history names it: the current
tree of every repository, and every older version still readable with `at=` (the last
`--history` commits of each repository; older rows are pruned as commits land, and by
the GC for a repository that has not committed since `--history` was lowered). Only
entry rows make content readable (there is no read by hash), so the change feed and
idempotency records, which name versions, keep nothing. A blob no kept row names goes
once it was last uploaded (its file's mtime, its row's `mtime`) more than the grace
period ago: deleted files past the history, uploads never committed, Terminal Use
archives once unpacked, the blobs of deleted repositories.

Racing a commit. A commit checks, inside its write transaction, that each blob it
names exists. The GC decides and removes under that same store lock (one write
transaction per batch of candidates), so a commit lands either before (its references
are seen: the blob stays) or after (the blob is gone: 422 `unknown_blob`, which clients
answer by uploading again); no commit ever names a removed blob. An upload of a blob
already stored, or a pack finding it present, refreshes its mtime (BlobDir; SmallBlobs
for a small blob, whose lookups wait while a batch of rows is being removed; written
to the row with the next write transaction, or, once a commit names the blob, kept in
memory until this pass folds it in: the lookup may have been another client's, whose
commit is still to come), so a blob a client was just told is stored outlives its
commit by the grace period.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import trio

from repomount.server.blobs import BlobDir
from repomount.server.smallblobs import SmallBlobs
from repomount.server.sqlite_commit import prune
from repomount.server.store import GcReport, Store

DEFAULT_INTERVAL = 3600.0  # seconds between automatic passes of `repomount serve`
DEFAULT_GRACE = 3600.0  # an unreferenced blob younger than this is left alone
BATCH = 10_000  # candidates decided per hold of the store's lock (commits wait meanwhile)

Transaction = Callable[[], AbstractContextManager[sqlite3.Connection]]


def collect(
    write: Transaction, blobs: BlobDir, small: SmallBlobs, *, history: int, grace: float
) -> GcReport:
    """One pass over a SqliteStore's blobs, files and rows. `write` opens its write
    transaction (under its lock), `history` is how many commits each repository keeps."""
    cutoff = time.time() - grace
    with small.refresh_lock, write() as db:
        _prune_to_history(db, history)
        small.fold_refreshes(db)
    files: list[str] = []
    total, total_bytes = small.totals()
    for sha, length, mtime in blobs.scan():  # outside the lock: commits go on meanwhile
        total += 1
        total_bytes += length
        if mtime < cutoff:
            files.append(sha)
    rows = [sha for sha, _ in small.older_than(cutoff)]
    freed = freed_bytes = 0
    for candidates, is_row in ((files, False), (rows, True)):
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            # Rows: refresh_lock until the batch commits, so that a lookup never finds
            # a row whose removal is decided but not yet seen by its connection.
            with small.refresh_lock if is_row else nullcontext(), write() as db:
                named = _referenced(db, batch)
                for sha in batch:
                    if sha in named:
                        continue
                    if is_row:
                        removed = small.remove_if_older(db, sha, cutoff)
                    else:  # None: uploaded again since
                        removed = blobs.remove_if_older(sha, cutoff)
                    if removed is not None:
                        freed += 1
                        freed_bytes += removed
    return GcReport(freed, freed_bytes, total - freed, total_bytes - freed_bytes)


def _prune_to_history(db: sqlite3.Connection, history: int) -> None:
    """Prune the repositories whose floor is behind what `history` keeps (commits prune
    as they land, but a repository may not have committed since it was lowered)."""
    rows = db.execute(
        "SELECT id, head - ? FROM repos WHERE floor < head - ?", (history, history)
    ).fetchall()
    for repo_id, floor in rows:
        db.execute("UPDATE repos SET floor = ? WHERE id = ?", (floor, repo_id))
        prune(db, repo_id, floor)


def _referenced(db: sqlite3.Connection, batch: list[str]) -> set[str]:
    """The blobs of `batch` that some kept entry row names (one scan of the entries,
    memory bounded by the batch)."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS gc_batch (sha TEXT PRIMARY KEY)")
    db.execute("DELETE FROM gc_batch")
    db.executemany("INSERT OR IGNORE INTO gc_batch VALUES (?)", [(sha,) for sha in batch])
    rows = db.execute(
        "SELECT DISTINCT blob FROM entries WHERE blob IN (SELECT sha FROM gc_batch)"
    ).fetchall()
    db.execute("DELETE FROM gc_batch")
    return {row[0] for row in rows}


def describe(report: GcReport) -> str:
    return (
        f"freed {report.freed} blobs ({report.freed_bytes} bytes); "
        f"kept {report.kept} blobs ({report.kept_bytes} bytes)"
    )


async def collect_periodically(
    store: Store, *, interval: float, grace: float, stop: trio.Event, prefix: str
) -> None:
    """A pass now and every `interval` seconds until `stop`, each in a worker thread
    (a pass under way finishes before the server stops). A pass that freed something
    is logged; one that failed is logged in one line, and the next one tries again."""
    while not stop.is_set():
        try:
            report = await trio.to_thread.run_sync(store.collect_garbage, grace)
        except (OSError, sqlite3.Error) as error:
            print(f"{prefix}: gc: failed: {error}", file=sys.stderr, flush=True)
        else:
            if report.freed:
                print(f"{prefix}: gc: {describe(report)}", file=sys.stderr, flush=True)
        with trio.move_on_after(interval):
            await stop.wait()
