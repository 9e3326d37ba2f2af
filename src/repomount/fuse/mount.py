"""Mount lifecycle: init, serve requests, answer the control channel, unmount cleanly."""

from __future__ import annotations

import collections
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from repomount import control, stalls
from repomount.fuse.operations import Operations
from repomount.remotes.base import RemoteError, Unavailable
from repomount.vfs import watcher
from repomount.vfs.core import Vfs

log = logging.getLogger(__name__)

ReadyCallback = Callable[[str | None], None]  # None: mounted; a string: why not


@dataclass
class MountOptions:
    mountpoint: Path
    control_socket: Path  # in a directory made private (control.prepare_socket)
    fuse_options: list[str] = field(default_factory=list)  # from -o
    drain_timeout: float = 60.0  # on SIGTERM/SIGINT and after unmount
    poll_interval: float = 10.0
    use_change_feed: bool = True


class KernelInvalidator:
    """Queues kernel cache invalidations; a background task sends them, never from
    inside a request handler (invalidate_inode blocks, and in a handler deadlocks)."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[str, int, str, int, bool]] = collections.deque()
        self._wakeup = trio.Event()
        self.enabled = False

    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None:
        if self.enabled:
            self._queue.append(("entry", parent_ino, name, deleted_ino, False))
            self._wakeup.set()

    def inode(self, ino: int, attr_only: bool = False) -> None:
        if self.enabled:
            self._queue.append(("inode", ino, "", 0, attr_only))
            self._wakeup.set()

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


FINAL_DRAIN_AFTER_UNMOUNT = 2.0  # seconds


def fuse_options(opts: MountOptions) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add("fsname=repomount")
    options.add("subtype=repomount")
    options.update(o for o in opts.fuse_options if o)
    return options


async def run(vfs: Vfs, opts: MountOptions, ready: ReadyCallback) -> int:
    """Mount, serve until unmounted or signalled, then drain and leave. Returns an exit
    code; `ready` is called exactly once (None on success, else the reason)."""
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
    sock = opts.control_socket
    try:
        pyfuse3.init(ops, str(opts.mountpoint), fuse_options(opts))
    except RuntimeError as e:
        ready(f"cannot mount on {opts.mountpoint}: {e}")
        await vfs.close()
        return 1
    invalidator.enabled = True
    clean = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(invalidator.run)
            nursery.start_soon(vfs.flusher.run)
            nursery.start_soon(vfs.sweep_forever)
            nursery.start_soon(vfs.prefetch.run)
            nursery.start_soon(vfs.streams.run)
            nursery.start_soon(
                partial(watcher.watch, vfs, opts.poll_interval, use_feed=opts.use_change_feed)
            )
            await nursery.start(control.serve, sock, _control_handler(vfs, opts))
            nursery.start_soon(_on_signals, vfs, opts)
            ready(None)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        clean = True
    finally:
        pyfuse3.close(unmount=True)
        sock.unlink(missing_ok=True)
    pending = await vfs.drain(opts.drain_timeout, own_loop=True)
    await vfs.close()
    await vfs.remote.aclose()
    if pending:
        log.error(
            "unmounted with %d change(s) not uploaded; they stay in the journal in %s and "
            "go out at the next mount of this remote: %s",
            len(pending), vfs.config.state_dir, ", ".join(pending[:20]),
        )  # fmt: skip
        return 1
    return 0 if clean else 1


def why_not_started(e: RemoteError) -> str:
    """The one line a failed start says: a refused token or an unknown repo as such
    (the adapter's info() words them), not as an unreachable remote."""
    if isinstance(e, Unavailable) and not e.message.startswith("cannot reach"):
        return f"cannot reach the remote: {e.message}"
    return e.message


async def _on_signals(vfs: Vfs, opts: MountOptions) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: uploading pending changes, then unmounting", signal.Signals(signum).name)
            await vfs.drain(opts.drain_timeout)
            pyfuse3.terminate()
            return


def _control_handler(vfs: Vfs, opts: MountOptions) -> control.Handler:
    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            limit = req.get("limit")
            return {
                "ok": True,
                **(await vfs.status(limit=limit if isinstance(limit, int) else None)),
            }
        if cmd == "sync":
            timeout = float(req.get("timeout") or opts.drain_timeout)
            started = time.time()
            pending = await vfs.drain(timeout)
            set_aside = [r for r in vfs.journal.set_aside_rows() if r["at"] >= started]  # type: ignore[operator]
            if req.get("unmounting"):
                # `repomount unmount` gave its time already: the drain after the kernel
                # lets go only sends what is new, it does not wait out the timeout again.
                opts.drain_timeout = min(opts.drain_timeout, FINAL_DRAIN_AFTER_UNMOUNT)
            return {
                "ok": not pending and not set_aside,
                "pending": pending,
                "set_aside": set_aside,
                "last_error": vfs.health.last_error or vfs.pending_error(),
            }
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    return handle
