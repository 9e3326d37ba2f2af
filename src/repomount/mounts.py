"""The kernel's mount table (/proc/PID/mountinfo): what is mounted at a path, waiting
for a mount to leave it, and which other mount namespaces still hold one.

Nothing here looks at a mount's files: a stat of a FUSE mount point waits on its
daemon, which may be this very process.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass
from pathlib import Path

FSTYPE = "fuse.repomount"  # fsname/subtype the mount sets (fuse/mount.py)
_SELF = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    device: str  # "major:minor": one per FUSE connection
    mountpoint: str
    fstype: str
    source: str


def unescape(field: str) -> str:
    """A path as the kernel writes it in the mount tables (space, tab, newline and
    backslash in octal)."""
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def parse(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
            mounts.append(
                Mount(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=fields[2],
                    mountpoint=unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=unescape(fields[sep + 2]),
                )
            )
        except (ValueError, IndexError):
            continue  # not a mountinfo line
    return mounts


def _read(path: str = _SELF) -> list[Mount]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def mount_at(real_path: str) -> Mount | None:
    """The mount seen at `real_path` (already resolved: os.path.realpath) in this
    process's namespace; None if nothing is mounted there."""
    return top_at(_read(), real_path)


def top_at(table: list[Mount], path: str) -> Mount | None:
    """Of the mounts at `path`, the one on top (the one a lookup there sees)."""
    here = [m for m in table if m.mountpoint == path]
    below = {m.parent_id for m in here}
    top = [m for m in here if m.mount_id not in below] or here
    return top[-1] if top else None


def is_mounted(path: str | Path) -> bool:
    return mount_at(os.path.realpath(path)) is not None


def wait_gone(mount: Mount, timeout: float) -> bool:
    """Block until `mount` is no longer in this process's mount namespace (True), or
    `timeout` seconds passed (False). The kernel wakes a poll of the mount table at
    every change, so this costs nothing while the table stays as it is."""
    deadline = time.monotonic() + timeout
    with open(_SELF, "rb") as f:
        poller = select.poll()
        poller.register(f.fileno(), select.POLLPRI | select.POLLERR)
        while True:
            f.seek(0)
            text = f.read().decode(errors="surrogateescape")
            if not any(m.mount_id == mount.mount_id for m in parse(text)):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(left * 1000)


def holders_elsewhere(mount: Mount) -> list[int]:
    """Processes (one per mount namespace) of other mount namespaces that still have
    the FUSE connection of `mount` mounted somewhere; those we may not look at are
    left out."""
    try:
        ours = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return []
    seen = {ours}
    holders = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.readlink(f"/proc/{entry.name}/ns/mnt")
            if ns in seen:
                continue
            table = _read(f"/proc/{entry.name}/mountinfo")
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        seen.add(ns)
        if any(m.device == mount.device and m.fstype == mount.fstype for m in table):
            holders.append(int(entry.name))
    return holders


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
