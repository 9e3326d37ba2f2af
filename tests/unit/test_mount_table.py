"""Reading the kernel's mount table (mounts.py): which mount `repomount unmount` would
act on, and when a mount left this namespace."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from repomount import mounts

TABLE = """\
22 1 0:21 / /proc rw,relatime - proc proc rw
40 1 0:40 / /home/me/my\\040notes rw,nosuid - fuse.repomount repomount rw,user_id=0
41 40 0:41 / /home/me/my\\040notes rw,relatime - tmpfs none rw
50 1 0:50 / /mnt/a rw,relatime shared:7 master:2 - fuse.repomount repomount rw
"""


def test_a_line_gives_its_mount_point_type_and_device() -> None:
    table = mounts.parse(TABLE)
    assert [m.mount_id for m in table] == [22, 40, 41, 50]
    a = table[3]
    assert (a.mountpoint, a.fstype, a.device, a.source) == (
        "/mnt/a", "fuse.repomount", "0:50", "repomount",
    )  # fmt: skip


def test_the_mount_on_top_is_the_one_seen_there() -> None:
    table = mounts.parse(TABLE)
    top = mounts.top_at(table, "/home/me/my notes")  # a tmpfs over a repomount mount
    assert top is not None and top.fstype == "tmpfs"
    assert mounts.top_at(table, "/home/me") is None


def test_wait_gone_wakes_when_the_mount_leaves(tmp_path: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path)], check=True)
    try:
        mine = mounts.mount_at(os.path.realpath(tmp_path))
        assert mine is not None and mine.fstype == "tmpfs"
        assert not mounts.wait_gone(mine, 0.1)
        threading.Timer(0.2, subprocess.run, (["umount", str(tmp_path)],)).start()
        assert mounts.wait_gone(mine, 30)
    finally:
        subprocess.run(["umount", str(tmp_path)], capture_output=True, check=False)
