"""A mount whose state directory's disk fills up: writes fail with ENOSPC, the mount
stays up, and every byte a program was not told had failed reaches the server.

The state directory and the cache sit on an 8 MiB tmpfs of the test's own. (Before,
the journal's failed commit of a batch's bookkeeping ended the mount: every open file
was lost to its program, and a later write went into the directory under it.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import smalldisk
from support.mount import MountProc, is_mounted, repomount
from support.server import ServerProc

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB filesystem, unmounted after the mounts that use it stopped (a fixture
    requested before mount_factory is torn down after it)."""
    with smalldisk.small_disk(tmp_path / "small", "8m") as d:
        yield d


def fill(path: Path) -> None:
    """Take every free byte of `path`'s filesystem."""
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(b"\0" * 65536)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
        while True:  # (the last pages)
            try:
                f.write(b"\0" * 512)
            except OSError:
                return


def write_until_full(path: Path, data: bytes) -> bool:
    """Write and close `path`; False if the disk filled up (ENOSPC, never another errno)."""
    try:
        with path.open("wb") as f:
            f.write(data)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
        return False
    return True


def test_a_full_state_disk_fails_writes_and_loses_nothing(
    server: ServerProc, small_disk: Path, mount_factory
) -> None:
    on_small = ["--state-dir", str(small_disk / "state"), "--cache-dir", str(small_disk / "cache")]
    m: MountProc = mount_factory(extra_args=[*on_small, "--flush-delay", "30"])
    # 1. our own content files fill the disk: a write fails, nothing else does
    results = [write_until_full(m.path / f"f{i}", os.urandom(2 * MIB)) for i in range(5)]
    assert results[:2] == [True, True] and False in results
    m.sync()  # the bookkeeping has the journal's reserve: the disk is full now
    assert is_mounted(m.path)
    mine = {p.name: p.read_bytes() for p in m.path.iterdir()}
    assert server.tree(m.repo) == mine  # (a partly written file as it is: as on ext4)

    # 2. something else takes every byte left; the journal may not book what it sends
    # (its reserve is spent), but the mount stays up and says why
    (m.path / "small.txt").write_bytes(b"small\n")
    fill(small_disk / "filler")
    repomount("sync", str(m.path), "--timeout", "5", env=m.env)  # (may fail: no room)
    assert is_mounted(m.path)
    assert (m.path / "small.txt").read_bytes() == b"small\n"

    # 3. with room again, everything goes
    (small_disk / "filler").unlink()
    m.sync()
    mine = {p.name: p.read_bytes() for p in m.path.iterdir()}
    assert "small.txt" in mine
    assert server.tree(m.repo) == mine


def test_df_shows_the_room_left_on_the_state_disk(
    server: ServerProc, small_disk: Path, mount_factory
) -> None:
    """A walkthrough found `df` showing 4.0T free, 0 used, whatever the state disk had
    left: writes wait there, so its room is what the mount has (less the journal's 1 MiB,
    past which a write is ENOSPC)."""
    on_small = ["--state-dir", str(small_disk / "state"), "--cache-dir", str(small_disk / "cache")]
    m: MountProc = mount_factory(extra_args=[*on_small, "--flush-delay", "30"])

    def free(st: os.statvfs_result) -> int:
        return st.f_bavail * st.f_frsize

    shown, disk = os.statvfs(m.path), os.statvfs(small_disk)
    assert shown.f_blocks * shown.f_frsize == disk.f_blocks * disk.f_frsize  # 8 MiB
    assert abs(free(shown) - (free(disk) - MIB)) < 64 << 10
    (m.path / "held.bin").write_bytes(os.urandom(2 * MIB))  # waits in the state dir
    after = os.statvfs(m.path)
    assert free(shown) - free(after) >= 2 * MIB - (64 << 10)
    assert after.f_blocks >= after.f_bfree >= after.f_bavail
