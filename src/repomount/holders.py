"""Which processes hold a mount busy (what `fuser -m` tells): an unmount refused with
EBUSY names them, so the user knows what to close."""

from __future__ import annotations

import os
from pathlib import Path

_LINKS = ("cwd", "root", "exe")  # (and every descriptor, below)


def holders(mountpoint: str | Path, *, limit: int = 5) -> list[str]:
    """Up to `limit` processes with their working directory, root, program or an open
    file inside `mountpoint`, as "NAME (pid N)"; those this user may not look into are
    not seen. The mount's own daemon is one of them only when it uses it itself."""
    top = os.path.realpath(mountpoint)
    found: list[str] = []
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid == os.getpid():
            continue
        if _uses(pid, top):
            found.append(f"{_name(pid)} (pid {pid})")
            if len(found) >= limit:
                break
    return found


def _uses(pid: int, top: str) -> bool:
    base = f"/proc/{pid}"
    try:
        links = [f"{base}/{name}" for name in _LINKS]
        links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
    except OSError:  # (gone, or another user's)
        return False
    for link in links:
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target == top or target.startswith(top.rstrip("/") + "/"):
            return True
    return False


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"
