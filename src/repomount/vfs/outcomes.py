"""What each answer of the remote does to the journal and the vfs: landed changes are
applied (through the hooks), transient failures back off, conflicts go to the policy,
permanent failures hold the change. The flusher (flusher.py) sends; this settles."""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from repomount import paths
from repomount.remotes.base import (
    Aborted,
    Applied,
    Conflicted,
    Expect,
    ExpectT,
    Failed,
    NotFound,
    Outcome,
    PreconditionRequired,
    Remote,
    RemoteError,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from repomount.vfs.coalesce import Planned
from repomount.vfs.conflicts import Policy, save_copy
from repomount.vfs.digests import Digests
from repomount.vfs.health import Health
from repomount.vfs.journal import Journal
from repomount.vfs.records import HeldFor, Record
from repomount.vfs.scheduling import expected_at
from repomount.vfs.sparse import Sparse, save_edits

log = logging.getLogger("repomount.vfs.flusher")  # (one logger for sending and settling)

MAX_RETRY_AFTER = 3600.0  # a longer Retry-After is taken as this
_MAKES = ("write", "symlink", "mkdir")  # changes that make a name (below a directory)
# Refusals that say nothing of what is at a change's path.
_NOT_ABOUT_PLACE = (Aborted, Unauthorized, TooLarge, Unsupported, PreconditionRequired)


@dataclass(frozen=True)
class Landing:
    """Where an answer says its changes landed: the head it names, and whether it is the
    remote's first answer to an earlier request again (a replay: its head may be older
    than heads seen since)."""

    head: str | None
    replayed: bool = False


class FlushHooks(Protocol):
    """What the flusher tells the rest of the vfs."""

    def applied(self, op: Planned, version: str | None, at: Landing) -> None: ...

    async def adopt_remote(
        self, path: str, blob: str | None = None, *, moved_here: bool = False
    ) -> None: ...

    async def keep_as_copy(self, op: Planned, olds: set[ExpectT]) -> tuple[str, int]: ...

    async def keep_dir_as_copy(self, op: Planned) -> str | None: ...

    async def move_dir_aside(self, top: str, refused: int) -> str | None: ...

    async def set_aside_lineage(self, op: Planned, olds: set[ExpectT], saved: Path) -> None: ...

    def content_materialized(self, old: str, new: str) -> None: ...


@dataclass
class FlushConfig:
    flush_delay: float = 0.5
    max_window: float = 5.0
    transfers: int = 4
    policy: Policy = Policy.KEEP_BOTH
    conflicts_dir: Path = Path("conflicts")
    backoff_base: float = 0.5
    backoff_max: float = 30.0


_NOTED = itertools.count(1)  # numbers conflicts in the order they were settled


@dataclass
class ConflictNote:
    path: str
    policy: str
    resolution: str
    time: float = field(default_factory=time.time)
    copy: str | None = None  # where the local version went: a path in the mount or the state dir
    seq: int = field(default_factory=lambda: next(_NOTED))  # (`repomount sync`: which are new)


def completes_when_applied(op: Planned) -> bool:
    """Whether `Outcomes._applied` completes the records of `op` (all of `op.ids`):
    every op but the delete half of a "write, then rename", which may instead move the
    write's records to the new name (`_old_name_settled`)."""
    return not (op.op == "delete" and op.rename_record is not None)


class Outcomes:
    """The flusher's outcome handling (a base class of `Flusher`, which owns the state
    declared here)."""

    remote: Remote
    journal: Journal
    hooks: FlushHooks
    config: FlushConfig
    health: Health
    digests: Digests
    conflicts: list[ConflictNote]
    _lost_to_conflict: dict[int, tuple[str, int | None]]
    _server_asked_until: float

    def _now(self) -> float:
        raise NotImplementedError

    def notify(self) -> None:
        raise NotImplementedError

    def retry_delay(self, tries: int, retry_after: float | None) -> float:
        """Capped exponential backoff with jitter; a server's Retry-After is a floor."""
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2 ** min(tries, 32))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

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

    async def _settle(self, op: Planned, outcome: Outcome, at: Landing) -> bool:
        if isinstance(outcome, Applied):
            self._applied(op, outcome.version, at)
            return True
        if isinstance(outcome, Conflicted):
            if await self._already_there(op, outcome.current, at):
                return True
            if await self._earlier_close_landed(op, outcome.current):
                return False  # sent again next round, over what landed
            await self._conflict(op, outcome.current)
            return False
        assert isinstance(outcome, Failed)
        if op.op == "delete" and isinstance(outcome.error, NotFound):
            self._applied(op, None, at)  # already gone: what the delete wanted
            return True
        if isinstance(outcome.error, Aborted):
            return False  # another op of the batch failed; this one goes next round
        if op.op == "rename" and isinstance(outcome.error, NotFound):
            # Sent again without its precondition (`mine`) after its source went
            # elsewhere: nothing is left to move. Dropped, as a rename that lost is
            # under the other policies; a write made at the new name since goes on.
            await self._conflict(op, None, drop=True)
            return False
        if op.op in ("delete", "rename") and outcome.error.code == "directory_not_empty":
            # A directory emptied here (removed, or replaced by a rename) that another
            # client wrote into meanwhile: a change made elsewhere, so a conflict, not
            # a refusal held for ever with every later change below it.
            await self._conflict(op, None)
            return False
        if outcome.error.retryable:
            err = outcome.error
            self._count_try(op, str(err), err.retry_after if isinstance(err, Unavailable) else None)
            return False
        if (top := await self._file_in_the_way(op, outcome.error)) is not None:
            await self._dir_lost_its_name(op, top)
            return False
        self._hold(op, f"{type(outcome.error).__name__}: {outcome.error.message}", "refused")
        return False

    async def _file_in_the_way(self, op: Planned, error: RemoteError) -> str | None:
        """Where a refused change of ours met a file (or symlink) another client made
        at the name of a directory of ours: the nearest such name at or above the path
        of a write, symlink or mkdir, as the remote says (a stat of each directory above
        it, on this rare path only). None when the refusal was for something else."""
        if op.op not in _MAKES or isinstance(error, _NOT_ABOUT_PLACE):
            return None
        parts = op.path.split("/")
        for n in range(1, len(parts) + (op.op == "mkdir")):
            top = "/".join(parts[:n])
            try:
                entry = await self.remote.stat(top)
            except RemoteError:
                return None
            if entry is None:
                return None  # (nothing there, so nothing below it either)
            if entry.kind != "dir":
                return top
        return None

    async def _dir_lost_its_name(self, op: Planned, top: str) -> None:
        """A directory of ours lost its name `top` to a file made elsewhere: a conflict
        (as a directory renamed onto a name taken meanwhile), not a refusal to hold,
        behind which every change in the directory would wait forever."""
        policy = self.config.policy
        log.warning("conflict on %s: made a file elsewhere, policy %s", top, policy.value)
        if policy == Policy.FAIL:
            self._held_as_conflict(op, top, f"conflict: {top} is a file on the remote")
            return
        beside = await self.hooks.move_dir_aside(top, min(op.ids))
        if beside is None:
            if any(
                rec is not None and paths.at_or_under(rec.path, top)
                for rec in map(self.journal.get, op.ids)
            ):
                self._hold(op, f"{top} is a file on the remote", "refused")
                return  # (nothing moved them: held, not sent again and again)
            # Moved aside with an earlier change of the round (a remote that answers
            # each change alone refused them all): they go again under their new names.
            self._count_try(op, f"{top} is a file on the remote", None)
            return
        resolution = f"local directory kept as {beside}"
        self.conflicts.append(ConflictNote(top, policy.value, resolution, copy=beside))
        await self.hooks.adopt_remote(top)

    async def _already_there(self, op: Planned, current: str | None, at: Landing) -> bool:
        """A replayed change whose first attempt landed (its answer was lost)."""
        if op.op == "delete" and current is None:
            self._applied(op, None, at)
            return True
        if op.op == "write" and current is not None and op.blob is not None:
            _, sha = await self.digests.of(op.blob)
            if self.remote.version_of(sha) == current:
                self._applied(op, current, at)
                return True
        return False

    async def _earlier_close_landed(self, op: Planned, current: str | None) -> bool:
        """A replay after a crash: an earlier close of this file (coalesced into `op`
        since) landed, its answer lost. The remote holds our own content, not someone
        else's: `op`'s rows expect that version now, and go again."""
        if op.op != "write" or current is None:
            return False
        for blob in op.blobs:
            if blob == op.blob or not self.journal.uses_blob(blob):
                continue
            _, sha = await self.digests.of(blob)
            if self.remote.version_of(sha) == current:
                log.info("%s: an earlier change of ours landed; sending the rest over it", op.path)
                olds = expected_at(op, op.path, self.journal)
                for i in op.ids:
                    rec = self.journal.get(i)
                    if rec is not None and rec.path == op.path and rec.expect in olds:
                        self.journal.update(rec, expect=current)
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

    def _applied(self, op: Planned, version: str | None, at: Landing) -> None:
        target = op.dst if op.op == "rename" and op.dst else op.path
        olds = expected_at(op, target, self.journal)  # (before its records go)
        self.hooks.applied(op, version, at)  # may link the content into the cache
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
        self._back_off(
            [r for r in map(self.journal.get, op.ids) if r is not None], error, retry_after
        )

    def _back_off(self, recs: list[Record], error: str, retry_after: float | None) -> None:
        """The records of one change failed: one retry time for them all. Drawn per
        record, the jitter let one go before another it was coalesced with (a temporary
        file's write before its rename over the file), so the temporary name was sent."""
        if not recs:
            return
        again = self._now() + self.retry_delay(max(r.tries for r in recs) + 1, retry_after)
        for rec in recs:
            self.journal.update(rec, tries=rec.tries + 1, last_error=error, next_try=again)

    def _hold_records(self, recs: list[Record], error: str, why: HeldFor = "refused") -> None:
        for rec in recs:
            self.journal.update(
                rec, state="held", held_for=why, last_error=error, tries=rec.tries + 1
            )

    async def _edits_lost(
        self, recs: list[Record], blob: str, edits: Sparse, error: RemoteError
    ) -> None:
        """Edits made offline over a version that is gone now (the file changed or was
        deleted elsewhere): they cannot be laid over it, and are never laid over
        another. Under `fail` they are held; else kept in the state directory."""
        path = recs[-1].path if recs else edits.where
        log.warning("conflict on %s: edited offline over a version gone since (%s)", path, error)
        if self.config.policy == Policy.FAIL:
            self._hold_records(recs, f"conflict: {path} changed on the remote", "conflict")
            self.conflicts.append(ConflictNote(path, self.config.policy.value, "held"))
            return
        saved = save_edits(self.config.conflicts_dir, path, self.journal.blob_path(blob), edits)
        resolution = f"offline edits saved to {saved}"
        for rec in recs:
            self._lost_to_conflict[rec.id] = (f"{path} changed on the remote; {resolution}", None)
        self.journal.complete(r.id for r in recs)
        self.conflicts.append(ConflictNote(path, self.config.policy.value, resolution))
        self.notify()
        await self.hooks.adopt_remote(path, blob)

    def _hold(self, op: Planned, error: str, why: HeldFor) -> None:
        for i in op.ids:
            rec = self.journal.get(i)
            if rec is not None:
                self.journal.update(
                    rec, state="held", held_for=why, last_error=error, tries=rec.tries + 1
                )

    def _held_as_conflict(self, op: Planned, where: str, why: str | None = None) -> None:
        """`op` held as a conflict (under `fail`, or one nothing can settle), and noted."""
        self._hold(op, why or f"conflict: {where} changed on the remote", "conflict")
        self.conflicts.append(ConflictNote(where, self.config.policy.value, "held"))

    def _expect_anything(self, op: Planned) -> bool:
        """`mine`: `op`'s records, sent again, expect anything (no precondition); False
        when they did already. With the write half of "write, then rename" onto a file
        the remote has, what it expects there is the rename record's (sent with it, not
        one of its ids): left as it was, every round met the same conflict again at once,
        a loop of tens of thousands of requests."""
        ids = [*op.ids, *([op.then_delete] if op.then_delete is not None else [])]
        loosened = False
        for rec in filter(None, map(self.journal.get, ids)):
            if rec.id == op.then_delete and rec.op == "rename":
                changes = {"expect_to": Expect.ANY}  # (its delete half keeps its own)
            elif rec.id in op.ids:
                changes = {"expect": Expect.ANY, "expect_to": Expect.ANY}
            else:
                continue
            if any(getattr(rec, name) is not Expect.ANY for name in changes):
                self.journal.update(rec, **changes)
                loosened = True
        return loosened

    async def _conflict(self, op: Planned, current: str | None, *, drop: bool = False) -> None:
        """`drop`: a rename whose source is gone, dropped under every policy."""
        policy = self.config.policy
        where = op.dst if op.op == "rename" and op.dst else op.path
        log.warning("conflict on %s (remote has %s), policy %s", where, current, policy.value)
        if policy == Policy.FAIL:
            self._held_as_conflict(op, where)
            return
        if op.op == "rename" and not drop and (beside := await self.hooks.keep_dir_as_copy(op)):
            # A directory moved onto a name made elsewhere meanwhile: it goes beside it
            # instead (what it carries may never have been sent), and is sent again.
            # Under `mine` too: the remote refuses to replace a directory that holds
            # files, and replacing it would delete theirs.
            resolution = f"local directory kept as {beside}"
            self.conflicts.append(ConflictNote(where, policy.value, resolution, copy=beside))
            await self.hooks.adopt_remote(where)
            return
        if policy == Policy.MINE and op.op != "delete" and not drop:
            # (A delete is dropped below as under every policy: sent again without its
            # precondition, it took their new content out of the tree, and no policy
            # deletes user content.)
            if not self._expect_anything(op):
                # Nothing left to loosen, yet a precondition failed: sent again it would
                # fail again at once, round after round. Held, and said.
                log.error("%s: conflict again with no precondition of ours left", where)
                self._held_as_conflict(op, where)
                return
            self.conflicts.append(ConflictNote(where, policy.value, "overwrote the remote"))
            return
        copy: str | None = None
        if op.op == "write" and op.blob is not None:
            copy_id = None
            olds = expected_at(op, op.path, self.journal)
            if policy == Policy.KEEP_BOTH:
                copy, copy_id = await self.hooks.keep_as_copy(op, olds)
                resolution = f"local version kept as {copy}"
            else:  # theirs
                saved = save_copy(
                    self.config.conflicts_dir, op.path, self.journal.blob_path(op.blob)
                )
                await self.hooks.set_aside_lineage(op, olds, saved)
                resolution = f"local version saved to {saved}"
                copy = str(saved)
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
        self.conflicts.append(ConflictNote(where, policy.value, resolution, copy=copy))
        await self.hooks.adopt_remote(op.path, op.blob)
        if op.dst:
            await self.hooks.adopt_remote(op.dst, moved_here=op.op == "rename")
