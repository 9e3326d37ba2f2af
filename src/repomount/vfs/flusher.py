"""The flusher: sends the journal's pending changes to the remote.

Changes that arrive close together (`flush_delay` of quiet, at most `max_window` after
the first) go out together: coalesced, then as atomic batch commits where the remote has
them, else as conditional single-file uploads, `transfers` at a time. Transient failures
back off exponentially with jitter (honouring Retry-After); conflicts go to the policy;
permanent failures hold the change (its data stays in the journal) and are reported.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Iterator

import trio

from repomount.remotes.base import (
    Applied,
    ApplyResult,
    Change,
    Conflict,
    Delete,
    Mkdir,
    NotFound,
    Remote,
    RemoteError,
    Rename,
    Symlink,
    Write,
)
from repomount.vfs.ahead import UploadsAhead
from repomount.vfs.coalesce import Planned, coalesce
from repomount.vfs.digests import Digests
from repomount.vfs.health import Health
from repomount.vfs.journal import Journal
from repomount.vfs.outcomes import (
    ConflictNote,
    FlushConfig,
    FlushHooks,
    Landing,
    Outcomes,
    completes_when_applied,
)
from repomount.vfs.records import Record
from repomount.vfs.scheduling import ready, runs
from repomount.vfs.sparse import lay_over_base
from repomount.vfs.staging import Stager
from repomount.vfs.waiting import Waiting

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 500  # journal row changes between WAL checkpoints
KEEP_SETTLED = 1000  # conflicts remembered for status and for fsync's answer
APPLY_CHUNK = 16  # outcomes applied between two chances for other requests to run
# Schedule points the bookkeeping of a landed batch waits first, so an fsync waiting for
# it (woken by _signal_progress) answers before it: the waiter needs two (its wake and
# its nursery's exit), and within one of trio's batches either may run first.
ANSWER_FIRST = 3
# Pause after a round that could not write the state directory, doubling up to the max
LOCAL_RETRY_S, LOCAL_RETRY_MAX_S = 2.0, 60.0


class Flusher(Outcomes, Waiting):
    def __init__(
        self,
        remote: Remote,
        journal: Journal,
        hooks: FlushHooks,
        config: FlushConfig,
        health: Health,
    ) -> None:
        self.remote = remote
        self.journal = journal
        self.hooks = hooks
        self.config = config
        self.health = health
        self.conflicts: list[ConflictNote] = []
        # The head our latest commit made (at start: the remote's), later commits' base;
        # never a replay's, which may be older.
        self.head: str | None = None
        self._changed = trio.Event()
        self._urgent = trio.Event()
        self._progress = trio.Event()
        # Applied by the remote, their bookkeeping still running: done for waiters.
        self._acknowledged: set[int] = set()
        self._local_failures = 0  # rounds in a row that could not write the state dir
        self._last_change = 0.0
        self.digests = Digests(journal)
        self.stager = Stager(remote)  # uploads of large files begun while written
        # contents of a burst of writes uploaded while it goes on
        self.ahead = UploadsAhead(remote, journal, self.digests, self.stager.has)
        # record id -> (what happened, the id of the conflict copy's write, if any)
        self._lost_to_conflict: dict[int, tuple[str, int | None]] = {}
        self._set_aside: dict[int, str] = {}  # record id -> why it can never be sent
        self._epoch: float | None = None  # wall clock minus trio's clock
        self._checkpointed = 0  # journal.version at the last checkpoint
        health.on_back = self._back_online
        self._server_asked_until = 0.0  # the latest time a Retry-After named
        self._last_back_online = -math.inf
        self._requests = 0  # requests sent whose outcomes are not all applied yet
        self._sending: set[str] = set()  # the paths of the changes of the round under way
        self._outcomes_in = trio.Event()  # set whenever one of them is done

    def _now(self) -> float:
        """Wall-clock seconds (retry times are stored in journal rows, so they outlive
        the process), advanced by trio's clock (so tests can run it virtually)."""
        if self._epoch is None:
            self._epoch = time.time() - trio.current_time()
        return self._epoch + trio.current_time()

    # ------------------------------------------------------------------ signals in

    def notify(self) -> None:
        """A change was journaled."""
        self._last_change = trio.current_time()
        self._changed.set()
        self.ahead.notice()

    def _back_online(self) -> None:
        """The remote answers again: what backed off while it was away goes now (but
        not before a time the server asked for with Retry-After). At most once per
        longest backoff: a remote that answers reads but refuses writes must not
        undo the backoff at every `ls`."""
        now = self._now()
        if now - self._last_back_online < self.config.backoff_max:
            return
        self._last_back_online = now
        self.journal.retry_now(not_before=self._server_asked_until)
        self._changed.set()

    def flush_now(self) -> None:
        """Skip the batching delay (sync, fsync, unmount); a change backing off after a
        failure still waits for its retry time."""
        self._urgent.set()
        self._changed.set()

    # ------------------------------------------------------------------ waiting

    def ids_for(self, path: str) -> list[int]:
        """Every journaled change naming `path`, held ones included."""
        return [r.id for r in self.journal.naming(path)]

    def pending_ids(self, path: str | None = None) -> list[int]:
        return [
            r.id
            for r in self.journal.records()
            if r.state == "pending" and (path is None or path in r.paths())
        ]

    async def outcomes_applied(self, timeout: float) -> None:
        """Until no request of ours is in flight (at most `timeout` seconds): what the
        remote reports after that (its change feed) can be told apart from our own
        changes, whose outcomes are applied by then."""
        with trio.move_on_after(timeout):
            while self._requests:
                await self._outcomes_in.wait()

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """Around one request and the application of its outcomes."""
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1
            self._outcomes_in.set()
            self._outcomes_in = trio.Event()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while True:
            ready = self._ready(self._now())
            if not ready:
                await self._wait_for_work()
                continue
            self._changed = trio.Event()
            await self._debounce()
            self._urgent = trio.Event()
            before = self.journal.version
            try:
                await self.round(self._ready(self._now()))
            except OSError as e:  # (the state directory's disk full): nothing is lost,
                # the journal is as it was before the write that failed; try again later
                await self._local_failure(e)
                continue
            self.health.local_error, self._local_failures = None, 0
            self._signal_progress()
            self._forget_old()
            if self.journal.version - self._checkpointed >= CHECKPOINT_EVERY:
                self._checkpointed = self.journal.version
                try:
                    await trio.to_thread.run_sync(self.journal.checkpoint)
                except (OSError, sqlite3.Error) as e:  # the WAL keeps it all meanwhile
                    log.warning("journal checkpoint failed: %s", e)
            if self.journal.version == before:  # nothing moved: never spin
                await trio.sleep(self.config.backoff_base)

    async def _local_failure(self, e: OSError) -> None:
        """A round could not write the journal (or read a content file): it is said once
        (status shows it while it lasts) and the round is tried again after a pause, or
        when a sync or an fsync asks from now on (room may be back). Changes the remote
        applied meanwhile are sent again; they land as replays."""
        why = f"state directory: {e.strerror or e}"
        if why != self.health.local_error:
            log.error("cannot book the changes sent (%s); trying again", e)
        self.health.local_error = why
        self._local_failures += 1
        self._urgent = trio.Event()
        with trio.move_on_after(
            min(LOCAL_RETRY_S * 2 ** (self._local_failures - 1), LOCAL_RETRY_MAX_S)
        ):
            await self._urgent.wait()

    async def _wait_for_work(self) -> None:
        """Until a change is journaled or a backed-off change is due again."""
        now = self._now()
        due = [r.next_try for r in self.journal.records("pending") if r.next_try > now]
        with trio.move_on_after(min(due) - now if due else math.inf):
            await self._changed.wait()
        self._changed = trio.Event()

    async def _debounce(self) -> None:
        first = trio.current_time()
        while not self._urgent.is_set():
            deadline = min(
                self._last_change + self.config.flush_delay, first + self.config.max_window
            )
            if trio.current_time() >= deadline:
                return
            with trio.move_on_at(deadline):
                await self._urgent.wait()

    def _ready(self, now: float) -> list[Record]:
        return ready(self.journal.records(), now)

    def _forget_old(self) -> None:
        """Bound what is kept about settled changes (status shows the newest)."""
        self.digests.forget_unused()
        self.stager.forget([b for b in self.stager.blobs() if not self.journal.uses_blob(b)])
        self.ahead.forget_unused()
        for settled in (self._lost_to_conflict, self._set_aside):
            while len(settled) > KEEP_SETTLED:
                del settled[next(iter(settled))]
        del self.conflicts[:-KEEP_SETTLED]

    def _online(self) -> None:
        super()._online()
        self.ahead.resume()  # (after a failure, contents go ahead again)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # ------------------------------------------------------------------ one round

    async def round(self, records: list[Record] | None = None) -> None:
        """Send these records (default: all that are ready) once. A transient failure
        gives each change it hit its own next retry time (stored in its row)."""
        if records is None:
            records = self._ready(self._now())
        if any(r.blob is not None and self.journal.sparse_of(r.blob) for r in records):
            await self._lay_edits(records)  # (edits made offline, over a version)
            records = self._ready(self._now())
        if not records:
            return
        self._sending = {p for r in records for p in r.paths()}
        try:
            await self._send_round(records)
        finally:
            self._sending = set()

    def sending(self, path: str) -> bool:
        """Whether a change of `path` is on its way (its round began): the remote may
        have it, whatever the node says yet."""
        return path in self._sending

    async def _send_round(self, records: list[Record]) -> None:
        # Pure logic over frozen records: a big plan is made off the trio thread.
        if len(records) > 500:
            plan = await trio.to_thread.run_sync(coalesce, records)
        else:
            plan = coalesce(records)
        self.journal.complete(plan.dropped)
        self.ahead.claim(op.blob for op in plan.ops if op.op == "write" and op.blob)
        if not plan.ops:
            return
        caps = self.remote.capabilities
        if caps.atomic_batch:
            step = max(1, caps.max_batch_ops)
            for start in range(0, len(plan.ops), step):
                if not await self._send_batch(plan.ops[start : start + step]):
                    return  # later batches may depend on this one: next round
            return
        for run in runs(plan.ops):
            if not await self._send_parallel(run):
                return

    async def _send_batch(self, ops: list[Planned]) -> bool:
        """One atomic commit. True when every op was applied."""
        with self._request():
            return await self._send_batch_now(ops)

    async def _send_batch_now(self, ops: list[Planned]) -> bool:
        try:
            await self.digests.prepare(op.blob for op in ops if op.op == "write" and op.blob)
            changes = [await self._change(op) for op in ops]
            result = await self.remote.apply(changes, base=self.head)
        except RemoteError as e:
            self._request_failed(e, ops)
            return False
        except FileNotFoundError:
            if not await self._set_aside_missing(ops):
                raise
            return False
        self._online()
        at = self._landing(result)
        outcomes = list(zip(ops, result.outcomes, strict=True))
        landed = [(op, o.version) for op, o in outcomes if isinstance(o, Applied)]
        # The remote has them: their waiters (fsync, sync) may answer while the
        # bookkeeping goes on, between its chunks; for 2,000 files that took 0.3 s at
        # 20 ms RTT. (A crash in between replays them under the same idempotency key.)
        early = {i for op, _ in landed if completes_when_applied(op) for i in op.ids}
        self._acknowledged |= early
        self._signal_progress()
        # Shielded: a cancel (unmount) between chunks would leave part of an applied
        # batch unrecorded, to be replayed as a different batch that conflicts with it.
        try:
            with trio.CancelScope(shield=True):
                for _ in range(ANSWER_FIRST if early else 0):
                    await trio.lowlevel.checkpoint()
                await self._apply_landed(landed, at)
        finally:
            self._acknowledged -= early
            self._signal_progress()
        all_applied = True
        for op, outcome in outcomes:
            if not isinstance(outcome, Applied):
                all_applied &= await self._settle(op, outcome, at)
        return all_applied

    async def _apply_landed(self, landed: list[tuple[Planned, str | None]], at: Landing) -> None:
        """A commit per chunk, and other requests served between chunks: a batch of a
        thousand outcomes must not stall the mount. (Applying an outcome is
        self-contained; a change journaled in between is rebased like one journaled
        while the request was in flight.)"""
        for start in range(0, len(landed), APPLY_CHUNK):
            if start:
                await trio.lowlevel.checkpoint()
            with self.journal.transaction():
                for op, version in landed[start : start + APPLY_CHUNK]:
                    self._applied(op, version, at)

    async def _send_parallel(self, ops: list[Planned]) -> bool:
        """Independent ops (distinct paths), each its own request, `transfers` at once."""
        results: list[bool] = [False] * len(ops)
        limit = trio.Semaphore(max(1, self.config.transfers))

        async def one(i: int, op: Planned) -> None:
            async with limit:
                with self._request():
                    results[i] = await self._send_one(op)

        async with trio.open_nursery() as nursery:
            for i, op in enumerate(ops):
                nursery.start_soon(one, i, op)
        return all(results)

    async def _send_one(self, op: Planned) -> bool:
        try:
            change = await self._change(op)
            result = await self.remote.apply([change], base=self.head)
        except RemoteError as e:
            self._request_failed(e, [op])
            return False
        except FileNotFoundError:
            if not await self._set_aside_missing([op]):
                raise
            return False
        self._online()
        return await self._settle(op, result.outcomes[0], self._landing(result))

    def _landing(self, result: ApplyResult) -> Landing:
        """Where `result`'s changes landed. A replay names its first answer's head,
        maybe older than one seen since: the flusher's head never goes back to it."""
        if result.replayed:
            return Landing(result.head or self.head, replayed=True)
        self.head = result.head or self.head
        return Landing(self.head)

    async def _lay_edits(self, records: list[Record]) -> None:
        """Edits made without the file's content (offline): fetch the version they were
        made over and lay them on it, so the whole content is sent. A fetch that fails
        backs the rows off like a failed request; a base version that is gone (the
        file changed or went meanwhile) is a conflict (outcomes.py)."""
        blobs = dict.fromkeys(r.blob for r in records if r.blob and self.journal.sparse_of(r.blob))
        for blob in blobs:
            assert blob is not None
            edits = self.journal.sparse_of(blob)
            if edits is None:
                continue
            recs = [r for r in self.journal.records() if r.blob == blob]
            try:
                whole = await lay_over_base(self.remote, self.journal, blob, edits)
            except (Conflict, NotFound) as e:
                await self._edits_lost(recs, blob, edits, e)
                continue
            except RemoteError as e:
                self.health.failed(e)
                if e.retryable:
                    self._back_off(recs, str(e), None)
                else:
                    self._hold_records(recs, f"{type(e).__name__}: {e.message}")
                continue
            self._online()
            self.journal.materialized(blob, whole)
            self.hooks.content_materialized(blob, whole)

    async def _set_aside_missing(self, ops: list[Planned]) -> bool:
        """A content file to send is gone (deleted behind our back): the changes that
        send it are set aside, so everything else still goes (their fsync gets EIO).
        False when every content file is there (the error was something else)."""
        blobs = [op.blob for op in ops if op.op == "write" and op.blob]
        gone = await trio.to_thread.run_sync(
            lambda: {b for b in blobs if not self.journal.blob_path(b).exists()}
        )
        if not gone:
            return False
        self.digests.forget(gone)
        recs = [r for r in self.journal.records() if r.blob in gone]
        why = "its content file is missing from the state directory"
        self.journal.set_aside([r.id for r in recs], why)
        for r in recs:
            self._set_aside[r.id] = why
        self.notify()
        for r in recs:  # the name shows what the remote has again
            await self.hooks.adopt_remote(r.path, r.blob)
        return True

    async def _change(self, op: Planned) -> Change:
        if op.op == "write":
            assert op.blob is not None
            size, sha = await self.digests.of(op.blob)
            source = self.journal.blob_path(op.blob)
            staged = await self.stager.take(op.blob, sha)  # (uploaded while written)
            staged = staged or await self.ahead.take(op.blob, sha)  # (or after, ahead)
            return Write(
                op.path, source, size, sha, op.sent_expect(),
                key=op.key, mode=op.mode, mtime_ns=op.mtime_ns, staged=staged,
            )  # fmt: skip
        if op.op == "delete":
            return Delete(op.path, op.sent_expect(), key=op.key)
        if op.op == "symlink":
            assert op.target is not None
            return Symlink(op.path, op.target, op.sent_expect(), key=op.key)
        if op.op == "rename":
            assert op.dst is not None
            return Rename(
                op.path, op.dst, op.sent_expect(), key=op.key, expect_to=op.sent_expect_to()
            )
        return Mkdir(op.path, key=op.key)
