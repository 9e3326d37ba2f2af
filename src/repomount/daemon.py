"""Starting a mount in the background, and stopping one.

`start` forks before anything else runs (no trio, no threads yet); the child mounts and
reports through a pipe whether the mount is ready, so errors reach the terminal and the
command's exit code. `unmount` asks the daemon to upload what is pending, unmounts, and
waits for the daemon to exit.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from repomount import control, holders, mounts, private, statusview, unixaddr
from repomount.options import DEFAULTS

log = logging.getLogger(__name__)

MountMain = Callable[[Callable[[str | None], None]], int]


def is_mounted(mountpoint: str | Path) -> bool:
    return mounts.is_mounted(mountpoint)


def check_mountpoint(mountpoint: Path) -> str | None:
    """Why `mountpoint` cannot be mounted on, or None."""
    # The mount table first: a stat of a mount whose daemon died fails (ENOTCONN)
    top = mounts.mount_at(os.path.realpath(mountpoint))
    if top is not None and top.fstype == mounts.FSTYPE and daemon_gone(mountpoint):
        return (
            f"{mountpoint} is still mounted, but its repomount daemon is gone (killed?); "
            f"run `repomount unmount {mountpoint}` first (it says what the daemon left "
            "unsent), then mount again"
        )
    if not mountpoint.exists():
        return f"mountpoint {mountpoint} does not exist"
    if not mountpoint.is_dir():
        return f"mountpoint {mountpoint} is not a directory"
    if top is not None and top.fstype == "autofs":
        # An automount point (fstab's x-systemd.automount) waiting for this mount:
        # mounted over, never listed (a listing would wait for this very mount).
        return None
    if top is not None:
        return f"{mountpoint} is already a mountpoint"
    try:
        if any(mountpoint.iterdir()):
            return f"mountpoint {mountpoint} is not empty"
    except PermissionError:
        return f"mountpoint {mountpoint} is not readable"
    return None


def daemon_gone(mountpoint: Path) -> bool:
    """Whether the mount's daemon died, leaving its mount behind: nothing listens on its
    control socket, and the kernel answers for the mount with ENOTCONN (a statfs from
    a thread: a daemon stopped, not dead, would make it wait)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            with unixaddr.address(control.socket_path(mountpoint)) as addr:
                s.connect(addr)
            return False
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        except OSError:
            return False
    found: list[int | None] = []

    def look() -> None:
        try:
            # statfs, not stat: the kernel answers a stat from its attribute cache for a
            # while after the daemon died, but a statfs always asks the daemon
            os.statvfs(mountpoint)
        except OSError as e:
            found.append(e.errno)

    probe = threading.Thread(target=look, daemon=True)
    probe.start()
    probe.join(2.0)
    return found == [errno.ENOTCONN]


def start(mount_main: MountMain, log_path: Path) -> int:
    """Run `mount_main(ready)` in a daemon; wait until it calls ready(). Exit code.
    `log_path`'s directory must exist, private (mounting.prepare_local_dirs). The
    daemon is a fork, not a new program: its command line is this one's, so it holds
    no secret (keys come from the environment, readable by this user only)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace").strip()
        if message == "ok":
            return 0
        os.waitpid(pid, 0)
        print(f"repomount: {message or 'the mount process died while starting'}", file=sys.stderr)
        return 1
    # child
    os.close(read_fd)
    os.umask(private.PRIVATE_UMASK)  # everything the daemon writes is 0600 / 0700
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    reported = False

    def ready(error: str | None) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        os.write(write_fd, b"ok" if error is None else error.encode())
        os.close(write_fd)

    code = 1
    try:
        code = mount_main(ready)
    except BaseException as e:
        log.exception("mount failed")
        ready(f"mount failed: {e}")
    finally:
        ready("the mount process exited while starting")
        os._exit(code)


DAEMON_EXIT_WAIT = 15.0  # seconds for the daemon to leave once unmounted


def unmount(
    mountpoint: Path, *, timeout: float = DEFAULTS.drain_timeout, lazy: bool = False
) -> tuple[int, str]:
    """Upload what is pending (showing progress on a terminal), then unmount (`lazy`:
    detach it now, the kernel lets go once nothing uses it), then wait for the daemon
    to exit. If some changes cannot be uploaded in `timeout`, unmount anyway: they stay
    in the journal for the next mount, and the exit code says so. Only a repomount
    mount is unmounted (exit 2 for anything else). Returns (exit code, message)."""
    mine = mounts.mount_at(os.path.realpath(mountpoint))
    if mine is None:
        return 2, f"{mountpoint} is not mounted"
    if mine.fstype != mounts.FSTYPE:
        return 2, (
            f"{mountpoint} is a {mine.fstype} mount, not a repomount mount; "
            "not unmounting it (use umount for other file systems)"
        )
    reply, untrusted = _sync_with_progress(mountpoint, timeout)
    result = subprocess.run(
        ["fusermount3", "-uz" if lazy else "-u", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        said = f"not unmounted: {result.stderr.strip() or 'fusermount3 failed'}"
        users = holders.holders(mountpoint) if "busy" in result.stderr.lower() else []
        if users:
            said += f"; in use by {', '.join(users)}: close them and unmount again"
        return 1, said
    held = _held_elsewhere(mine)
    daemon_pid = reply.get("pid") if reply else None
    if isinstance(daemon_pid, int):
        if not _wait_exit(daemon_pid, DAEMON_EXIT_WAIT):
            return 1, (
                f"unmounted {mountpoint}{held}, but its daemon (pid {daemon_pid}) is still "
                f"running after {DAEMON_EXIT_WAIT:.0f} s; see mount.log in its state directory"
            )
    else:
        sock = control.socket_path(mountpoint)
        deadline = time.monotonic() + DAEMON_EXIT_WAIT
        while sock.exists() and time.monotonic() < deadline:
            if not control.listening(sock):  # a killed daemon's, left behind: no wait
                sock.unlink(missing_ok=True)
                break
            time.sleep(0.05)
    if reply is None and untrusted:
        return 1, f"unmounted {mountpoint} without asking its daemon to upload: {untrusted}"
    if reply is None:
        return _left_by_dead_daemon(mountpoint, held)
    if not reply.get("ok"):
        return 1, f"unmounted {mountpoint}{held}, but {_unsent(reply, timeout)}"
    return 0, f"unmounted {mountpoint}{held}"


def _unsent(reply: dict[str, Any], timeout: float) -> str:
    """What a daemon's answer to the unmount's sync says was not sent, and what becomes
    of it."""
    pending = reply.get("pending") or []
    # (a request still unanswered when the drain timed out has no error yet)
    why = reply.get("last_error") or reply.get("error")
    why = why or f"the remote answered nothing within the drain timeout ({timeout:g} s)"
    # (a daemon of an older version names paths only)
    unsent = reply.get("unsent") or f"{len(pending)} path(s) ({', '.join(pending[:10])})"
    said = f"{unsent} could not be uploaded ({why}); they are kept in the journal"
    held = reply.get("held_conflicts") or []
    if not held:
        return f"{said} and go out at the next mount of this remote"
    rest = "; anything else goes out at the next mount" if set(pending) - set(held) else ""
    return f"{said}: {statusview.held_after_conflict(held)}{rest}"


def _left_by_dead_daemon(mountpoint: Path, held: str) -> tuple[int, str]:
    """After unmounting a mount whose daemon had died (kill -9): exit code and message,
    non-zero when its journal still holds changes (they were never sent)."""
    from repomount.vfs import journal_peek  # (only here: a plain unmount loads none of it)

    said = f"unmounted {mountpoint}{held} (the mount daemon was not running)"
    state_dir = control.noted_state_dir(mountpoint)
    left = journal_peek.pending_in(state_dir, limit=statusview.LISTED) if state_dir else None
    control.forget_state_dir(mountpoint)
    if left is None or not left.count:
        return 0, said
    return 1, (
        f"{said}; it had not sent {statusview.changes_named(left.as_status())}: they stay "
        f"in the journal in {state_dir} and go out at the next mount of this remote with "
        "that state directory"
    )


def _held_elsewhere(mine: mounts.Mount) -> str:
    """What to tell about other mount namespaces still holding the mount ('' if none)."""
    holders = mounts.holders_elsewhere(mine)
    if not holders:
        return ""
    who = ", ".join(f"{mounts.process_name(pid)} (pid {pid})" for pid in holders[:5])
    return (
        f"; another mount namespace still has it mounted, held by {who}: its daemon "
        "stops, so there it fails with 'Transport endpoint is not connected' until "
        "unmounted there too"
    )


def _wait_exit(pid: int, timeout: float) -> bool:
    """Whether process `pid` exits within `timeout` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)  # readable once it exited
        return bool(readable)
    finally:
        os.close(fd)


def _sync_with_progress(mountpoint: Path, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Ask the daemon to upload everything: its reply, None when no daemon answers
    (with why, when another user's process would have)."""
    result: dict[str, Any] = {}

    def ask() -> None:
        try:
            result["reply"] = control.request(
                mountpoint, "sync", wait=timeout + 5, timeout=timeout, unmounting=True
            )
        except control.UntrustedControl as e:
            result["untrusted"] = str(e)
        except OSError:
            result["reply"] = None  # it died: unmount what is left

    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    show = sys.stderr.isatty()
    while worker.is_alive():
        worker.join(0.5)
        if show and worker.is_alive():
            try:
                status = control.request(mountpoint, "status", wait=5)
            except OSError:
                continue
            pending = len(status.get("pending") or [])
            state = "uploading" if status.get("online") else "waiting for the remote"
            print(f"\rrepomount: {state}: {pending} change(s) pending   ", end="", file=sys.stderr)
    if show:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
    reply: dict[str, Any] | None = result.get("reply")
    return reply, result.get("untrusted", "")
