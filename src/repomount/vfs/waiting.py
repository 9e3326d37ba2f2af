"""Waiting for the remote to have changes: what fsync, fsyncdir, `repomount sync` and
`unmount` wait on (a base class of `Flusher`, which owns the state declared here and
wakes `_progress` whenever a change lands or is settled otherwise)."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterable, Sequence

import trio

from repomount.vfs.errors import FsError
from repomount.vfs.health import Health
from repomount.vfs.journal import Journal
from repomount.vfs.records import Record
from repomount.vfs.scheduling import behind_held, with_blockers

log = logging.getLogger(__name__)

# How long the remote may have been unreachable before an fsync stops waiting for it
# (EIO; the change stays journaled). A short outage, a server restarting, is waited
# out; a mount offline for longer answers at once instead of after 60 s.
UNREACHABLE_FOR = 10.0


class Waiting:
    journal: Journal
    health: Health
    _progress: trio.Event
    _acknowledged: set[int]
    _lost_to_conflict: dict[int, tuple[str, int | None]]
    _set_aside: dict[int, str]
    _server_asked_until: float

    def flush_now(self) -> None:
        raise NotImplementedError

    def _unreachable_long(self, since: float) -> bool:
        """A request failed after `since` and found the remote unreachable for
        UNREACHABLE_FOR already. (Not an answer "busy": the remote is there, and the
        change waits, as it does while the mount is online.)"""
        h = self.health
        failed_at = h.last_error_at
        return (
            not h.online
            and not h.busy
            and failed_at is not None
            and failed_at >= since
            and failed_at - h.since >= UNREACHABLE_FOR
        )

    def pending_ids(self, path: str | None = None) -> list[int]:
        raise NotImplementedError

    async def run(self) -> None:
        raise NotImplementedError

    def try_at_once(self, ids: Sequence[int]) -> None:
        """Send the changes `ids` in the next round, even those backing off, if the
        remote is offline (an fsync: see `wait_for`'s `tried_since`)."""
        if not self.health.online:
            # With the earlier changes that hold them back (a mkdir of their directory,
            # the write of a file renamed onto theirs, backing off too): else none of
            # them could go before those are due, up to the longest backoff.
            wanted = with_blockers(self.journal.records(), ids)
            self.journal.retry_now(not_before=self._server_asked_until, ids=wanted)

    async def wait_for(
        self, ids: Sequence[int], timeout: float, *, tried_since: float | None = None
    ) -> None:
        """Until the remote has the changes `ids`; FsError(ESTALE/EIO) if it will not.
        With `tried_since` (an fsync's start, time.time()), EIO as soon as a request
        fails after it (its own try, or any other already on its way) with the remote
        unreachable for UNREACHABLE_FOR already: a mount offline for longer answers
        after one try, not after `timeout` (vim's saves)."""
        wanted = set(ids)
        conflict: str | None = None
        lost: str | None = None  # one of them was set aside: EIO, once the rest went
        with trio.move_on_after(timeout):
            while True:
                todo = list(wanted)
                while todo:
                    i = todo.pop()
                    if i in self._acknowledged:
                        wanted.discard(i)
                        continue
                    rec = self.journal.get(i)
                    if rec is None:
                        wanted.discard(i)
                        if i in self._set_aside:
                            lost = self._set_aside[i]
                        if i in self._lost_to_conflict:
                            # Report the conflict once our content is safe remotely too
                            # (the copy may have landed already: look at it now).
                            conflict, copy_id = self._lost_to_conflict[i]
                            if copy_id is not None and copy_id not in wanted:
                                wanted.add(copy_id)
                                todo.append(copy_id)
                    elif rec.state == "held":
                        raise FsError(_held_errno(rec), rec.last_error or "upload failed")
                if not wanted:
                    if lost is not None:
                        raise FsError(errno.EIO, lost)
                    if conflict is not None:
                        raise FsError(errno.ESTALE, conflict)
                    return
                self._raise_if_behind_held(wanted)
                # (Looked at before each wait, not only after a wake: a failure that
                # came while the caller was between two waits, acknowledged()'s
                # LOCAL_SYNC_AFTER split, signalled no one, and the next round is a
                # backoff away.)
                if tried_since is not None and self._unreachable_long(tried_since):
                    raise FsError(
                        errno.EIO,
                        f"remote unreachable since {time.ctime(self.health.since)}"
                        f" ({self.health.error}); kept, sent once it is back",
                    )
                self.flush_now()
                await self._progress.wait()
        why = self.health.error or "no answer in time"
        raise FsError(errno.EIO, f"not uploaded within {timeout:.0f}s: {why}")

    def _raise_if_behind_held(self, wanted: set[int]) -> None:
        """A change that waits behind a held one (a file in a directory whose mkdir is
        held) goes no sooner than that one is settled: its waiter hears that one's
        error now, not after its timeout."""
        if not self.journal.any_held():
            return  # (the common case, at no cost per wake)
        for i, held in behind_held(self.journal.records()).items():
            if i in wanted:
                why = held.last_error or "upload failed"
                raise FsError(
                    _held_errno(held), f"waits for a change of {held.path} that is held: {why}"
                )

    def sendable_ids(self) -> list[int]:
        """The pending changes but those that wait behind a held one."""
        stuck = behind_held(self.journal.records()) if self.journal.any_held() else {}
        return [i for i in self.pending_ids() if i not in stuck]

    async def drain(self, timeout: float, *, later_too: bool = True) -> list[int]:
        """Try to send everything (held changes too, once); the ids still pending.
        Without `later_too`, only the changes journaled before it began (and the copies
        those that lost a conflict went to): `repomount sync` while another program
        goes on writing answers for what was written before it, not for what that
        program writes meanwhile (it answered "not everything is uploaded" at once)."""
        if timeout <= 0:  # a stop's time is up: its earlier drain said what is left
            return [r.id for r in self.outstanding()]
        for rec in self.journal.records("held"):
            self.journal.update(rec, state="pending", held_for=None)
        deadline = trio.current_time() + timeout
        before = None if later_too else {r.id for r in self.journal.records()}

        def wanted(ids: Iterable[int]) -> list[int]:
            if before is None:
                return list(ids)
            mine = self._with_copies(before)
            return [i for i in ids if i in mine]

        # Until every change went or was held again: one refused (too large, say) does
        # not stop the wait for the others, which go in the rounds after it.
        while ids := wanted(self.sendable_ids()):
            try:
                await self.wait_for(ids, max(0.0, deadline - trio.current_time()))
                break
            except FsError as e:
                log.warning("drain: %s", e)
                if trio.current_time() >= deadline:
                    break
        return wanted(r.id for r in self.outstanding())

    def _with_copies(self, ids: set[int]) -> set[int]:
        """`ids`, and the rows of the copies their content went to on losing a conflict."""
        found, todo = set(ids), list(ids)
        while todo:
            lost = self._lost_to_conflict.get(todo.pop())
            copy_id = lost[1] if lost is not None else None
            if copy_id is not None and copy_id not in found:
                found.add(copy_id)
                todo.append(copy_id)
        return found

    def outstanding(self) -> list[Record]:
        """The journal's changes, but those the remote acknowledged (whose bookkeeping
        is still running)."""
        return [r for r in self.journal.records() if r.id not in self._acknowledged]

    async def settled(self) -> None:
        """Until the bookkeeping of every acknowledged change is done."""
        while self._acknowledged:
            await self._progress.wait()

    async def drain_with_own_loop(self, timeout: float) -> list[int]:
        """`drain` for when `run` is not running (before mounting, after unmounting)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.run)
            left = await self.drain(timeout)
            nursery.cancel_scope.cancel()
        return left


def _held_errno(rec: Record) -> int:
    """What a wait for the held change `rec` answers: ESTALE for a conflict, else EIO."""
    return errno.ESTALE if rec.held_for == "conflict" else errno.EIO
