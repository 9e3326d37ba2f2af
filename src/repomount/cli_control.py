"""`repomount status` and `repomount sync`: asking a running mount over its control
socket (control.py), and saying what it answered (statusview.py). What is said holds
names and a remote's error messages: each line is printed with its control characters
escaped (`say`), so none can forge a line or drive the terminal. `--json` gives the
exact strings (JSON escapes them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from repomount import statusview
from repomount.printable import printable

PROGRESS_EVERY = 0.5  # seconds between progress lines on a terminal


def control(mountpoint: Path, cmd: str, *, quiet: bool = False, **kw: Any) -> dict[str, Any] | None:
    """The mount's answer to `cmd`, or None (said on stderr unless `quiet`)."""
    from repomount import control

    try:
        return control.request(mountpoint.absolute(), cmd, **kw)
    except control.UntrustedControl as e:
        why = str(e)
    except OSError:
        why = _no_answer(mountpoint)
    if not quiet:
        say(f"repomount: {why}")
    return None


def _no_answer(mountpoint: Path) -> str:
    """Why nothing answered on the control socket of `mountpoint`, in words."""
    from repomount import daemon, mounts

    top = mounts.mount_at(os.path.realpath(mountpoint))
    if top is None or top.fstype != mounts.FSTYPE:
        return f"no repomount mount answers at {mountpoint}"
    if daemon.daemon_gone(mountpoint.absolute()):
        return (
            f"{mountpoint} is still mounted, but its repomount daemon is gone (killed?); "
            f"`repomount unmount {mountpoint}` unmounts it and says what it left unsent"
        )
    return f"the repomount mount at {mountpoint} does not answer on its control socket"


def say(*lines: str, file: TextIO | None = None) -> None:
    """Print `lines` (to stderr by default), each with its control characters escaped."""
    print("\n".join(map(printable, lines)), file=file or sys.stderr)


def fail(message: str, code: int = 1) -> int:
    """Say `message` as the command's error; `code`, its exit code."""
    say(f"repomount: {message}")
    return code


def cmd_status(args: argparse.Namespace) -> int:
    # A person reads the oldest few pending changes; a script gets all of them.
    limit = None if args.json else statusview.LISTED
    reply = control(args.mountpoint, "status", wait=30, limit=limit)
    if reply is None:
        return 1
    if not reply.pop("ok", False):
        say(f"repomount: {reply.get('error', 'the mount refused')}")
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        say(*statusview.render(reply, time.time()), file=sys.stdout)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    mnt = args.mountpoint

    def ask() -> dict[str, Any] | None:
        return control(mnt, "sync", wait=args.timeout + 5, timeout=args.timeout)

    reply = with_progress(mnt, ask) if sys.stderr.isatty() else ask()
    if reply is None:
        return 1
    for c in reply.get("conflicts") or []:  # (uploaded, but not under its own name)
        say(f"repomount: conflict: {c['path']} changed on the remote: {c['resolution']}")
    if reply.get("ok"):
        print("everything is uploaded")
        return 0
    for item in reply.get("set_aside") or []:
        say(
            f"repomount: {item['op']} of {item['path']} set aside: {item['reason']}"
            " (see set-aside.txt in the state directory)"
        )
    if not reply.get("pending"):
        if reply.get("error"):
            say(f"repomount: {reply['error']}")
        return 1
    status = control(mnt, "status", quiet=True, wait=30, limit=statusview.LISTED)
    if status is None or not status.get("ok"):  # (it went away meanwhile)
        count = statusview.plural(len(reply["pending"]), "path")
        say(f"repomount: changes to {count} still pending: {reply.get('last_error')}")
        return 1
    why = reply.get("last_error")
    say(
        f"repomount: not everything is uploaded: {statusview.pending_headline(status)}"
        + (f"; {why}" if why else ""),
        *statusview.pending_lines(status),
    )
    return 1


Reply = dict[str, Any] | None


def with_progress(mountpoint: Path, call: Callable[[], Reply]) -> Reply:
    """Run `call` (which waits on the mount) while a line on stderr says what is left,
    asked of the mount every PROGRESS_EVERY seconds; the line is erased at the end."""
    result: list[Reply] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    shown = False
    while True:
        worker.join(PROGRESS_EVERY)
        if not worker.is_alive():
            break
        status = control(mountpoint, "status", quiet=True, wait=5, limit=0)
        if status is None or not status.get("ok"):
            continue
        line = statusview.progress(status, time.time())
        print(f"\rrepomount: {printable(line)}\x1b[K", end="", file=sys.stderr, flush=True)
        shown = True
    if shown:
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)
    return result[0] if result else None
