"""The flusher: sends the journal's pending changes to the remote.

Changes that arrive close together (`flush_delay` of quiet, at most `max_window` after
the first) go out together: coalesced, then as atomic batch commits where the remote has
them, else as conditional single-file uploads, `transfers` at a time. Transient failures
back off exponentially with jitter (honouring Retry-After); conflicts go to the policy;
permanent failures hold the change (its data stays in the journal) and are reported.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    Change,
    Conflicted,
    Delete,
    Expect,
    Failed,
    Mkdir,
    NotFound,
    Outcome,
    Remote,
    RemoteError,
    Rename,
    Symlink,
    Unavailable,
    Write,
)
from repomount.vfs.coalesce import Planned, coalesce
from repomount.vfs.conflicts import Policy, conflict_name, save_copy
from repomount.vfs.digests import Digests
from repomount.vfs.errors import FsError
from repomount.vfs.health import Health
from repomount.vfs.journal import HeldFor, Journal, Record
from repomount.vfs.scheduling import expected_at, ready, runs

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600.0  # a longer Retry-After is taken as this
CHECKPOINT_EVERY = 500  # journal row changes between WAL checkpoints
KEEP_SETTLED = 1000  # conflicts remembered for status and for fsync's answer
APPLY_CHUNK = 16  # outcomes applied between two chances for other requests to run


class FlushHooks(Protocol):
    """What the flusher tells the rest of the vfs."""

    def applied(self, op: Planned, version: str | None, blob: Path | None) -> None: ...

    async def adopt_remote(self, path: str, blob: str | None = None) -> None: ...

    def conflict_copy(self, path: str, copy_path: str, blob: str, size: int) -> None: ...


@dataclass
class FlushConfig:
    flush_delay: float = 0.5
    max_window: float = 5.0
    transfers: int = 4
    policy: Policy = Policy.KEEP_BOTH
    conflicts_dir: Path = Path("conflicts")
    backoff_base: float = 0.5
    backoff_max: float = 30.0


@dataclass
class ConflictNote:
    path: str
    policy: str
    resolution: str
    time: float = field(default_factory=time.time)


class Flusher:
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
        self.head: str | None = None
        self._changed = trio.Event()
        self._urgent = trio.Event()
        self._progress = trio.Event()
        self._last_change = 0.0
        self.digests = Digests(journal)
        # record id -> (what happened, the id of the conflict copy's write, if any)
        self._lost_to_conflict: dict[int, tuple[str, int | None]] = {}
        self._epoch: float | None = None  # wall clock minus trio's clock
        self._checkpointed = 0  # journal.version at the last checkpoint
        health.on_back = self._back_online
        self._server_asked_until = 0.0  # the latest time a Retry-After named
        self._last_back_online = -math.inf
        self._sending = 0  # requests sent whose outcomes are not all applied yet
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
            while self._sending:
                await self._outcomes_in.wait()

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """Around one request and the application of its outcomes."""
        self._sending += 1
        try:
            yield
        finally:
            self._sending -= 1
            self._outcomes_in.set()
            self._outcomes_in = trio.Event()

    async def wait_for(self, ids: Sequence[int], timeout: float) -> None:
        """Until the remote has the changes `ids`; FsError(ESTALE/EIO) if it will not."""
        wanted = set(ids)
        conflict: str | None = None
        with trio.move_on_after(timeout):
            while True:
                todo = list(wanted)
                while todo:
                    i = todo.pop()
                    rec = self.journal.get(i)
                    if rec is None:
                        wanted.discard(i)
                        if i in self._lost_to_conflict:
                            # Report the conflict once our content is safe remotely too
                            # (the copy may have landed already: look at it now).
                            conflict, copy_id = self._lost_to_conflict[i]
                            if copy_id is not None and copy_id not in wanted:
                                wanted.add(copy_id)
                                todo.append(copy_id)
                    elif rec.state == "held":
                        code = errno.ESTALE if rec.held_for == "conflict" else errno.EIO
                        raise FsError(code, rec.last_error or "upload failed")
                if not wanted:
                    if conflict is not None:
                        raise FsError(errno.ESTALE, conflict)
                    return
                self.flush_now()
                await self._progress.wait()
        raise FsError(errno.EIO, f"not uploaded within {timeout:.0f}s: {self.health.last_error}")

    async def drain(self, timeout: float) -> list[int]:
        """Try to send everything (held changes too, once); the ids still pending."""
        for rec in self.journal.records("held"):
            self.journal.update(rec, state="pending", held_for=None)
        try:
            await self.wait_for(self.pending_ids(), timeout)
        except FsError as e:
            log.warning("drain: %s", e)
        return [r.id for r in self.journal.records()]

    async def drain_with_own_loop(self, timeout: float) -> list[int]:
        """`drain` for when `run` is not running (before mounting, after unmounting)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run)
            left = await self.drain(timeout)
            nursery.cancel_scope.cancel()
        return left

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
            await self.round(self._ready(self._now()))
            self._signal_progress()
            self._forget_old()
            if self.journal.version - self._checkpointed >= CHECKPOINT_EVERY:
                self._checkpointed = self.journal.version
                await trio.to_thread.run_sync(self.journal.checkpoint)
            if self.journal.version == before:  # nothing moved: never spin
                await trio.sleep(self.config.backoff_base)

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

    def retry_delay(self, tries: int, retry_after: float | None) -> float:
        """Capped exponential backoff with jitter; a server's Retry-After is a floor."""
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** min(tries, 32))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    def _ready(self, now: float) -> list[Record]:
        return ready(self.journal.records(), now)

    def _forget_old(self) -> None:
        """Bound what is kept about settled changes (status shows the newest)."""
        self.digests.forget_unused()
        while len(self._lost_to_conflict) > KEEP_SETTLED:
            del self._lost_to_conflict[next(iter(self._lost_to_conflict))]
        del self.conflicts[:-KEEP_SETTLED]

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    # ------------------------------------------------------------------ one round

    async def round(self, records: list[Record] | None = None) -> None:
        """Send these records (default: all that are ready) once. A transient failure
        gives each change it hit its own next retry time (stored in its row)."""
        if records is None:
            records = self._ready(self._now())
        if not records:
            return
        # Pure logic over frozen records: a big plan is made off the trio thread.
        if len(records) > 500:
            plan = await trio.to_thread.run_sync(coalesce, records)
        else:
            plan = coalesce(records)
        self.journal.complete(plan.dropped)
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
        self._online()
        self.head = result.head or self.head
        outcomes = list(zip(ops, result.outcomes, strict=True))
        landed = [(op, o.version) for op, o in outcomes if isinstance(o, Applied)]
        # Shielded: a cancel (unmount) between chunks would leave part of an applied
        # batch unrecorded, to be replayed as a different batch that conflicts with it.
        with trio.CancelScope(shield=True):
            await self._apply_landed(landed)
        all_applied = True
        for op, outcome in outcomes:
            if not isinstance(outcome, Applied):
                all_applied &= await self._settle(op, outcome)
        return all_applied

    async def _apply_landed(self, landed: list[tuple[Planned, str | None]]) -> None:
        """A commit per chunk, and other requests served between chunks: a batch of a
        thousand outcomes must not stall the mount. (Applying an outcome is
        self-contained; a change journaled in between is rebased like one journaled
        while the request was in flight.)"""
        for start in range(0, len(landed), APPLY_CHUNK):
            if start:
                await trio.lowlevel.checkpoint()
            with self.journal.transaction():
                for op, version in landed[start : start + APPLY_CHUNK]:
                    self._applied(op, version)

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
        self._online()
        self.head = result.head or self.head
        return await self._settle(op, result.outcomes[0])

    async def _change(self, op: Planned) -> Change:
        if op.op == "write":
            assert op.blob is not None
            size, sha = await self.digests.of(op.blob)
            source = self.journal.blob_path(op.blob)
            return Write(op.path, source, size, sha, op.sent_expect(), key=op.key, mode=op.mode)
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

    # ------------------------------------------------------------------ outcomes

    def _online(self) -> None:
        self.health.ok()

    def _request_failed(self, e: RemoteError, ops: list[Planned]) -> None:
        self.health.failed(e)
        error = f"{type(e).__name__}: {e.message}"
        if e.retryable:
            retry_after = e.retry_after if isinstance(e, Unavailable) else None
            for op in ops:
                self._count_try(op, error, retry_after)
            return
        log.error("upload refused, changes held: %s", e.message)
        for op in ops:
            self._hold(op, error, "refused")

    async def _settle(self, op: Planned, outcome: Outcome) -> bool:
        if isinstance(outcome, Applied):
            self._applied(op, outcome.version)
            return True
        if isinstance(outcome, Conflicted):
            if await self._already_there(op, outcome.current):
                return True
            await self._conflict(op, outcome.current)
            return False
        assert isinstance(outcome, Failed)
        if op.op == "delete" and isinstance(outcome.error, NotFound):
            self._applied(op, None)  # already gone: what the delete wanted
            return True
        if isinstance(outcome.error, Aborted):
            return False  # another op of the batch failed; this one goes next round
        if outcome.error.retryable:
            err = outcome.error
            self._count_try(op, str(err), err.retry_after if isinstance(err, Unavailable) else None)
            return False
        self._hold(op, f"{type(outcome.error).__name__}: {outcome.error.message}", "refused")
        return False

    async def _already_there(self, op: Planned, current: str | None) -> bool:
        """A replayed change whose first attempt landed (its answer was lost)."""
        if op.op == "delete" and current is None:
            self._applied(op, None)
            return True
        if op.op == "write" and current is not None and op.blob is not None:
            _, sha = await self.digests.of(op.blob)
            if self.remote.version_of(sha) == current:
                self._applied(op, current)
                return True
        return False

    def _old_name_settled(self, op: Planned) -> bool:
        """`op` is the delete half of a "write, then rename" and the old name is settled
        (deleted, already gone, or the remote's to keep) while the write at the new name
        has not landed (an aborted batch, a failed write, or a plan that merged it into
        a later rename). Completing the rename record alone would leave that content
        journaled under the old name; instead its write records move to the new name
        (expecting what the rename expected there), and the rename record is done.
        False when `op` is no such delete half."""
        if op.rename_record is None:
            return False
        rec = self.journal.get(op.rename_record)
        if rec is None or rec.op != "rename" or rec.dst is None:
            return False  # (the write half landed: the record is a plain delete now)
        for w in reversed(self.journal.naming(rec.path)):
            if w.id >= rec.id:
                continue
            if w.path != rec.path or w.op not in ("write", "symlink"):
                break  # an earlier file of that name ends here
            self.journal.update(w, path=rec.dst, expect=rec.expect_to)
        self.journal.complete([rec.id])
        self.notify()
        return True

    def _applied(self, op: Planned, version: str | None) -> None:
        blob = self.journal.blob_path(op.blob) if op.op == "write" and op.blob else None
        target = op.dst if op.op == "rename" and op.dst else op.path
        olds = expected_at(op, target, self.journal)  # (before its records go)
        self.hooks.applied(op, version, blob)  # may move the content into the cache
        if not (op.op == "delete" and self._old_name_settled(op)):
            self.journal.complete(op.ids)
        self.digests.forget(op.blobs)
        if version is not None:
            for old in olds:
                self.journal.rebase(target, old, version, after=max(op.ids, default=0))
        if op.then_delete is not None:
            # The write half of "write + rename" landed; the record left is the delete
            # of the old name, and must stay one if this round stops here.
            rec = self.journal.get(op.then_delete)
            if rec is not None and rec.op == "rename":
                self.journal.update(rec, op="delete", dst=None)

    def _count_try(self, op: Planned, error: str, retry_after: float | None) -> None:
        now = self._now()
        if retry_after is not None:
            until = now + min(retry_after, MAX_RETRY_AFTER)
            self._server_asked_until = max(self._server_asked_until, until)
        for i in op.ids:
            rec = self.journal.get(i)
            if rec is not None:
                delay = self.retry_delay(rec.tries + 1, retry_after)
                self.journal.update(
                    rec, tries=rec.tries + 1, last_error=error, next_try=now + delay
                )

    def _hold(self, op: Planned, error: str, why: HeldFor) -> None:
        for i in op.ids:
            rec = self.journal.get(i)
            if rec is not None:
                self.journal.update(
                    rec, state="held", held_for=why, last_error=error, tries=rec.tries + 1
                )

    async def _conflict(self, op: Planned, current: str | None) -> None:
        policy = self.config.policy
        where = op.dst if op.op == "rename" and op.dst else op.path
        log.warning("conflict on %s (remote has %s), policy %s", where, current, policy.value)
        if policy == Policy.FAIL:
            self._hold(op, f"conflict: {where} changed on the remote", "conflict")
            self.conflicts.append(ConflictNote(where, policy.value, "held"))
            return
        if policy == Policy.MINE:
            for i in op.ids:
                rec = self.journal.get(i)
                if rec is not None:
                    self.journal.update(rec, expect=Expect.ANY, expect_to=Expect.ANY)
            self.conflicts.append(ConflictNote(where, policy.value, "overwrote the remote"))
            return
        if op.op == "write" and op.blob is not None:
            copy_id = None
            if policy == Policy.KEEP_BOTH:
                copy = conflict_name(op.path)
                rec = self.journal.add(
                    "write", copy, blob=op.blob, mode=op.mode, expect=Expect.ABSENT
                )
                copy_id = rec.id
                size, _ = await self.digests.of(op.blob)
                resolution = f"local version kept as {copy}"
                self.hooks.conflict_copy(op.path, copy, op.blob, size)
            else:  # theirs
                saved = save_copy(
                    self.config.conflicts_dir, op.path, self.journal.blob_path(op.blob)
                )
                resolution = f"local version saved to {saved}"
            for i in op.ids:
                self._lost_to_conflict[i] = (
                    f"{op.path} changed on the remote; {resolution}",
                    copy_id,
                )
            self.journal.complete(op.ids)
            self.notify()
        else:
            # A delete, rename or mkdir of something that changed remotely: theirs wins
            # (nothing of theirs is deleted; our side lost no content).
            resolution = "the remote's version was kept"
            if not (op.op == "delete" and self._old_name_settled(op)):
                for i in op.ids:
                    note = f"{where} changed on the remote; {resolution}"
                    self._lost_to_conflict[i] = (note, None)
                self.journal.complete(op.ids)
            # (else: the old name of a moved file; its content goes to the new name)
        self.conflicts.append(ConflictNote(where, policy.value, resolution))
        await self.hooks.adopt_remote(op.path, op.blob)
        if op.dst:
            await self.hooks.adopt_remote(op.dst)
