"""Mount lifecycle: init, serve requests, answer the control channel, stop cleanly.

Every stop drains once: a signal (SIGTERM, SIGINT, SIGHUP), `repomount unmount`, the
kernel ending the session (`fusermount3 -u`, `umount`), or the mount leaving this
namespace while another still holds it. See `Stop`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from repomount import control_server, mounts, stalls, statusview
from repomount.fuse import readahead
from repomount.fuse.operations import Operations
from repomount.options import DEFAULTS
from repomount.remotes.errors import RemoteError, Unavailable
from repomount.vfs import watcher
from repomount.vfs.core import Vfs

log = logging.getLogger(__name__)

ReadyCallback = Callable[[str | None], None]  # None: mounted; a string: why not
# (changes pending, online, the current error): what a service manager shows
StatusCallback = Callable[[int, bool, str | None], None]


@dataclass
class MountOptions:
    mountpoint: Path
    control_socket: Path  # in a directory made private (control.prepare_socket)
    fuse_options: list[str] = field(default_factory=list)  # from -o
    drain_timeout: float = DEFAULTS.drain_timeout  # how long a stop waits for uploads, once
    poll_interval: float = DEFAULTS.poll_interval
    read_ahead: int = DEFAULTS.read_ahead  # bytes; 0: the kernel's default
    use_change_feed: bool = not DEFAULTS.no_change_feed
    on_stop: Callable[[StopProgress], None] | None = None  # how a stop's drain goes
    on_status: StatusCallback | None = None  # called as the pending changes change


@dataclass(frozen=True)
class StopProgress:
    pending: int  # changes not sent yet
    seconds_left: float  # before the stop gives up waiting for the remote
    done: bool  # the stop is over: `pending` changes stay in the journal


class KernelInvalidator:
    """Queues kernel cache invalidations; a background task sends them, never from
    inside a request handler (invalidate_inode blocks, and in a handler deadlocks)."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[str, int, str, int, bool]] = collections.deque()
        self._wakeup = trio.Event()
        self.enabled = False
        # Inodes with an invalidation queued, and an event set once it was sent.
        self._pending: dict[int, tuple[int, trio.Event]] = {}
        self._sent = 0  # how many invalidations were sent (or dropped)
        self._queued = 0

    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None:
        if self.enabled:
            self._queue.append(("entry", parent_ino, name, deleted_ino, False))
            self._wakeup.set()

    def inode(self, ino: int, attr_only: bool = False) -> None:
        if self.enabled:
            self._queue.append(("inode", ino, "", 0, attr_only))
            self._queued += 1
            _, told = self._pending.get(ino, (0, trio.Event()))
            self._pending[ino] = (self._queued, told)
            self._wakeup.set()

    async def told(self, ino: int) -> None:
        """Until the kernel was told of the changes of `ino` queued so far. An open
        waits for it: until then the kernel holds the file's old size, and a read
        stops there, handing out the new content cut to the old length (a torn read;
        read, changed and written back, it overwrote the change made elsewhere
        without a conflict, its precondition being the new version)."""
        pending = self._pending.get(ino)
        if pending is not None:
            await pending[1].wait()

    async def run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._queue:
                kind, ino, name, deleted, attr_only = self._queue.popleft()
                try:
                    if kind == "entry":
                        pyfuse3.invalidate_entry_async(
                            ino, name.encode(), deleted, ignore_enoent=True
                        )
                    else:
                        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, attr_only)
                except OSError:
                    pass  # the kernel no longer knows it: nothing to drop
                finally:
                    if kind == "inode":
                        self._sent += 1
                        pending = self._pending.get(ino)
                        if pending is not None and pending[0] <= self._sent:
                            del self._pending[ino]
                            pending[1].set()


# After `repomount unmount` waited for the uploads, the stop that follows sends only what
# came in meanwhile; nothing at all when the unmount's wait left changes unsent (the
# remote is away: waiting again would only make the stop longer).
FINAL_DRAIN_AFTER_UNMOUNT = 2.0  # seconds
UNMOUNT_WINDOW = 30.0  # seconds after that wait in which a stop counts as its unmount
# How long the kernel gets to end the session itself once the mount left this namespace
# (it does at once when no other namespace holds a copy, but the daemon may hear of it
# later: a plain unmount beside 16 busy writers on 2 cores took over 1 s, and was told
# that the kernel still held the mount).
KERNEL_GRACE = 5.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PROGRESS_EVERY = 0.5  # seconds between two StopProgress reports
STATUS_EVERY = 1.0  # seconds between two looks at what on_status reports


def fuse_options(opts: MountOptions) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add("fsname=repomount")
    options.add("subtype=repomount")
    options.update(o for o in opts.fuse_options if o)
    return options


class Stop:
    """The one stop of a mount, however it starts. The first cause sets its deadline,
    `budget` seconds later; every drain of the stop (while mounted, then after the kernel
    let go) ends by then, so a stop takes `--drain-timeout` at most, once. What is still
    unsent stays in the journal for the next mount."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.deadline: float | None = None
        self.why = ""
        self.requested = trio.Event()
        self.gone_here = False  # the mount left this namespace: nothing left to unmount
        self._drains: set[trio.CancelScope] = set()
        self._unmount_budget: tuple[float, float] | None = None  # (until when, budget)

    def begin(self, why: str) -> bool:
        """Start the stop: True, or False when it had started already."""
        if self.deadline is not None:
            return False
        now = trio.current_time()
        budget = self.budget
        if self._unmount_budget is not None and now < self._unmount_budget[0]:
            budget = min(budget, self._unmount_budget[1])
        self.deadline = now + budget
        self.why = why
        self.requested.set()
        return True

    def after_unmount_sync(self, left_unsent: bool) -> None:
        """`repomount unmount` waited for the uploads and unmounts next: the stop that
        follows (within UNMOUNT_WINDOW) does not wait all over again."""
        budget = 0.0 if left_unsent else FINAL_DRAIN_AFTER_UNMOUNT
        self._unmount_budget = (trio.current_time() + UNMOUNT_WINDOW, budget)

    def seconds_left(self) -> float:
        assert self.deadline is not None
        return max(0.0, self.deadline - trio.current_time())

    def cut_short(self) -> None:
        """Stop waiting for uploads now (a second signal)."""
        self.deadline = trio.current_time()
        for scope in self._drains:
            scope.cancel()

    @contextlib.contextmanager
    def draining(self) -> Iterator[None]:
        with trio.CancelScope() as scope:
            self._drains.add(scope)
            try:
                yield
            finally:
                self._drains.discard(scope)


async def _unsent(vfs: Vfs) -> dict[str, Any]:
    """What is not sent yet, counted and named as `repomount status` does (per change,
    not per journal row): the keys of its answer."""
    return (await vfs.pending_summary(limit=statusview.LISTED)).as_status()


async def run(vfs: Vfs, opts: MountOptions, ready: ReadyCallback) -> int:
    """Mount, serve until unmounted or signalled, then drain once and leave. Returns an
    exit code; `ready` is called exactly once (None on success, else the reason)."""
    stalls.install_from_env()
    try:
        await vfs.start()
    except RemoteError as e:
        ready(why_not_started(e))
        await vfs.close()
        return 1
    invalidator = KernelInvalidator()
    vfs.invalidator = invalidator
    ops = Operations(vfs)
    # Before mounting: once mounted, any stat of the mountpoint from this process waits
    # on a request only this process can answer.
    real_mountpoint = os.path.realpath(opts.mountpoint)
    try:
        pyfuse3.init(ops, str(opts.mountpoint), fuse_options(opts))
    except RuntimeError as e:
        why = str(e)
        given = [o for o in opts.fuse_options if o]
        if "fuse_session_new" in why and given:
            # (libfuse names the option it does not know on stderr only: the log)
            why += f": is one of the -o options ({','.join(given)}) unknown to libfuse?"
        ready(f"cannot mount on {opts.mountpoint}: {why}")
        await vfs.close()
        return 1
    invalidator.enabled = True
    mine = mounts.mount_at(real_mountpoint)  # our mount, as this namespace has it
    stop = Stop(opts.drain_timeout)
    told = False

    def ready_once(error: str | None) -> None:
        nonlocal told
        if not told:
            told = True
            ready(error)

    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, stop)
            clean = await _serve(vfs, opts, ready_once, stop, invalidator, mine)
            ready_once(f"{opts.mountpoint} was unmounted before it answered")
            if stop.begin("unmounted"):
                await _announce(vfs, stop)
            await _drain(vfs, opts, stop, own_loop=True)
            nursery.cancel_scope.cancel()
    unsent = await _unsent(vfs)
    if opts.on_stop is not None:
        opts.on_stop(StopProgress(unsent["pending_changes"], 0.0, done=True))
    await vfs.close()
    await vfs.remote.aclose()
    if unsent["pending_changes"]:
        held = vfs.held_conflicts()
        log.error(
            "stopped with %s not sent; they stay in the journal in %s, and the next mount "
            "with this state directory sends them%s",
            statusview.changes_named(unsent), vfs.config.state_dir,
            f"; but {statusview.held_after_conflict(held)}" if held else "",
        )  # fmt: skip
        return 1
    return 0 if clean else 1


async def _serve(
    vfs: Vfs,
    opts: MountOptions,
    ready: ReadyCallback,
    stop: Stop,
    invalidator: KernelInvalidator,
    mine: mounts.Mount | None,
) -> bool:
    """Answer the kernel until it lets go or a stop ends the session; True when the
    kernel's session ended normally."""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(invalidator.run)
            nursery.start_soon(vfs.flusher.run)
            nursery.start_soon(vfs.sweep_forever)
            for host in vfs.hosts():
                nursery.start_soon(host)
            nursery.start_soon(
                partial(watcher.watch, vfs, opts.poll_interval, use_feed=opts.use_change_feed)
            )
            handler = _control_handler(vfs, stop)
            await nursery.start(control_server.serve, opts.control_socket, handler)
            nursery.start_soon(_stop_when_asked, vfs, opts, stop)
            if mine is not None:
                nursery.start_soon(_stop_when_gone_here, mine, stop)
            else:
                log.warning("%s is not in the mount table: cannot watch it", opts.mountpoint)
            answering = trio.Event()
            if opts.on_status is not None:
                nursery.start_soon(_report_status, vfs, opts.on_status, answering)
            # (Once the kernel's INIT is answered: the answer would reset the read-ahead.)
            tune = partial(readahead.tune, opts.read_ahead, opts.fuse_options, mine)
            nursery.start_soon(_ready_once_answering, opts.mountpoint, ready, stop, answering, tune)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        return True
    finally:
        # A mount that left this namespace is not unmounted again: the path may show
        # another mount by now (as root, libfuse would detach whatever is there).
        pyfuse3.close(unmount=not stop.gone_here)
        opts.control_socket.unlink(missing_ok=True)


async def _ready_once_answering(
    mountpoint: Path,
    ready: ReadyCallback,
    stop: Stop,
    answering: trio.Event,
    tune: Callable[[os.stat_result], object] | None = None,
) -> None:
    """Say the mount is ready once it answers: a `stat` of the mountpoint, from a
    thread (the kernel asks this process, whose loop must be free to answer). `tune`
    runs just before, with that stat (the kernel's session is set up by then)."""
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError as e:
        ready(f"{mountpoint} was mounted but does not answer: {e.strerror}")
        stop.begin("not answering")
        return
    if tune is not None:
        tune(st)
    ready(None)
    answering.set()


async def _report_status(vfs: Vfs, on_status: StatusCallback, answering: trio.Event) -> None:
    """Once the mount answers, on_status with the pending changes (counted as
    `repomount status` does), each time they or the remote's health changed."""
    await answering.wait()
    seen: tuple[object, ...] = ()
    while True:
        health = vfs.health
        now = (vfs.journal.version, health.online, health.last_error)
        if now != seen:
            seen = now
            summary = await vfs.pending_summary(limit=0)
            on_status(summary.count, health.online, health.last_error)
        await trio.sleep(STATUS_EVERY)


def why_not_started(e: RemoteError) -> str:
    """The one line a failed start says: a refused token or an unknown repo as such
    (the adapter's info() words them), not as an unreachable remote."""
    if isinstance(e, Unavailable) and not e.message.startswith("cannot reach"):
        return f"cannot reach the remote: {e.message}"
    return e.message


async def _announce(vfs: Vfs, stop: Stop) -> None:
    unsent = await _unsent(vfs)
    if not unsent["pending_changes"]:
        log.info("%s: stopping: nothing to send", stop.why)
        return
    if stop.seconds_left() < 1:  # (after an unmount whose wait left them unsent)
        log.info(
            "%s: stopping without waiting again: %s left in the journal",
            stop.why, statusview.changes_named(unsent),
        )  # fmt: skip
        return
    log.info(
        "%s: stopping: sending %s, for at most %.0f s; what is not sent by then stays "
        "in the journal",
        stop.why, statusview.changes_named(unsent), stop.seconds_left(),
    )  # fmt: skip


async def _drain(vfs: Vfs, opts: MountOptions, stop: Stop, *, own_loop: bool) -> None:
    """The stop's drain: until everything is sent or the stop's deadline."""
    async with trio.open_nursery() as nursery:
        if opts.on_stop is not None:
            nursery.start_soon(_report, vfs, stop, opts.on_stop)
        with stop.draining():
            await vfs.drain(stop.seconds_left(), own_loop=own_loop)
        nursery.cancel_scope.cancel()


async def _report(vfs: Vfs, stop: Stop, on_stop: Callable[[StopProgress], None]) -> None:
    while True:
        summary = await vfs.pending_summary(limit=0)
        on_stop(StopProgress(summary.count, stop.seconds_left(), done=False))
        await trio.sleep(PROGRESS_EVERY)


async def _stop_when_asked(vfs: Vfs, opts: MountOptions, stop: Stop) -> None:
    """A signal (or the mount leaving this namespace) asked to stop: send what is
    pending while still mounted, then end the kernel session."""
    await stop.requested.wait()
    await _announce(vfs, stop)
    await _drain(vfs, opts, stop, own_loop=False)
    pyfuse3.terminate()


async def _on_signals(signals: Any, stop: Stop) -> None:
    """The first signal stops the mount; another one stops it waiting for uploads."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if not stop.begin(name):
            log.warning("%s again: stopping now; what is not sent stays in the journal", name)
            stop.cut_short()


async def _stop_when_gone_here(mine: mounts.Mount, stop: Stop) -> None:
    """Stop once the mount left this namespace (`repomount unmount`, `fusermount3 -u`,
    `umount -l`) even if the kernel goes on holding it, for another mount namespace
    or for files open after a lazy unmount: then it would never tell us to stop, and
    this daemon would retry the remote for ever."""
    while not await trio.to_thread.run_sync(mounts.wait_gone, mine, 60.0, abandon_on_cancel=True):
        pass
    await trio.sleep(KERNEL_GRACE)  # the kernel ends the session itself: we are cancelled
    stop.gone_here = True
    if stop.begin("unmounted"):
        log.warning(
            "%s was unmounted here, but the kernel still holds the mount %.0f s later "
            "(another mount namespace, or files still open after a lazy unmount); stopping: "
            "there it now fails with 'Transport endpoint is not connected'",
            mine.mountpoint,
            KERNEL_GRACE,
        )


def _control_handler(vfs: Vfs, stop: Stop) -> control_server.Handler:
    told = 0  # the newest conflict a `sync` has reported (ConflictNote.seq)

    def conflicts_untold() -> list[dict[str, Any]]:
        """Conflicts settled since the last `sync` reported any (or since the mount
        began): a sync that says everything is uploaded also says which of the user's
        versions went to a copy instead of its name."""
        nonlocal told
        new = [c for c in vfs.flusher.conflicts if c.seq > told]
        told = max((c.seq for c in new), default=told)
        return [vars(c) for c in new]

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            limit = req.get("limit")
            return {
                "ok": True,
                **(await vfs.status(limit=limit if isinstance(limit, int) else None)),
            }
        if cmd == "sync":
            timeout = float(req.get("timeout") or stop.budget)
            started = time.time()
            # (`unmount` waits for everything; `sync`, for what was written before it)
            pending = await vfs.drain(timeout, later_too=bool(req.get("unmounting")))
            set_aside = [r for r in vfs.journal.set_aside_rows() if r["at"] >= started]  # type: ignore[operator]
            if req.get("unmounting"):
                stop.after_unmount_sync(left_unsent=bool(pending))
            reply = {
                "ok": not pending and not set_aside,
                "pending": pending,
                "set_aside": set_aside,
                "conflicts": conflicts_untold(),
                "last_error": vfs.health.error or vfs.pending_error(),
                "pid": os.getpid(),  # `repomount unmount` waits for it to exit
            }
            if req.get("unmounting") and pending:  # (the unmount names them as status)
                reply["unsent"] = statusview.changes_named(await _unsent(vfs))
                reply["held_conflicts"] = vfs.held_conflicts()
            return reply
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    return handle
