"""A file changed on the server while open here: the close reports it, nothing is lost."""

from __future__ import annotations

import errno
import os

import pytest
from support.mount import MountProc
from support.server import ServerProc


def test_close_reports_conflict_and_keeps_both(server: ServerProc, mount_factory) -> None:
    server.create_repo("c")
    server.put("c", "doc.txt", b"base\n")
    m: MountProc = mount_factory("c", create=False)
    fd = os.open(m.path / "doc.txt", os.O_RDWR)
    try:
        os.pwrite(fd, b"mine\n", 0)
        server.put("c", "doc.txt", b"theirs\n")  # another client, meanwhile
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno in (errno.ESTALE, errno.EIO)
    finally:
        os.close(fd)
    # The remote keeps the other client's content...
    assert server.get("c", "doc.txt") == b"theirs\n"
    # ...and ours is kept in the state dir, where the docs say.
    saved = list((m.state_dir).rglob("conflicts/*/doc.txt"))
    assert len(saved) == 1 and saved[0].read_bytes() == b"mine\n"
    assert "doc.txt" in m.log() and "conflict" in m.log()
    # The mount then shows the remote's version.
    assert (m.path / "doc.txt").read_bytes() == b"theirs\n"


def test_close_without_fsync_reports_conflict(server: ServerProc, mount_factory) -> None:
    server.create_repo("c2")
    server.put("c2", "a.txt", b"v1")
    m: MountProc = mount_factory("c2", create=False)
    f = (m.path / "a.txt").open("r+b")
    f.write(b"local")
    server.put("c2", "a.txt", b"remote")
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno in (errno.ESTALE, errno.EIO)
    assert server.get("c2", "a.txt") == b"remote"
    saved = list(m.state_dir.rglob("conflicts/*/a.txt"))
    assert [p.read_bytes() for p in saved] == [b"local"]


def test_new_file_racing_a_remote_create_conflicts(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory()
    os.listdir(m.path)  # listing cached: "x" does not exist yet
    fd = os.open(m.path / "x", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"here")
    server.put(m.repo, "x", b"there")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno in (errno.ESTALE, errno.EIO)
    assert server.get(m.repo, "x") == b"there"
