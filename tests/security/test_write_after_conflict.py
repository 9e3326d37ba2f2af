"""Issue 17 #2: writing on through a descriptor after its change lost a conflict.

`fsync` answers ESTALE (the file changed on the remote meanwhile); a program that keeps
writing through the same descriptor and closes must never modify the remote's version:
its bytes go to the local side (the conflict copy's lineage)."""

from __future__ import annotations

import errno
import os
import re

import pytest

from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")

CONFLICT = re.compile(r"^doc\.conflict-\d{8}T\d{6}Z-[^/]+\.txt$")


def _lose_a_conflict(server: ServerProc, m: MountProc, fd: int) -> None:
    os.write(fd, b"mine, first part\n")
    server.put(m.repo, "doc.txt", b"w2: version 2 (remote)\n")  # another writer
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.ESTALE


def test_writes_after_estale_go_to_the_conflict_copy(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "0.2"])
    server.put(m.repo, "doc.txt", b"base\n")
    assert (m.path / "doc.txt").read_bytes() == b"base\n"
    fd = os.open(m.path / "doc.txt", os.O_RDWR | os.O_TRUNC)
    try:
        _lose_a_conflict(server, m, fd)
        os.write(fd, b"mine, second part\n")
        os.fsync(fd)  # the copy's lineage: nothing to conflict with
        os.write(fd, b"mine, third part\n")
    finally:
        os.close(fd)
    m.sync()
    tree = server.tree(m.repo)
    assert tree.pop("doc.txt") == b"w2: version 2 (remote)\n"  # never touched
    (copy, content), *rest = tree.items()
    assert not rest and CONFLICT.match(copy)
    assert content == b"mine, first part\nmine, second part\nmine, third part\n"
    assert (m.path / "doc.txt").read_bytes() == b"w2: version 2 (remote)\n"
    assert (m.path / copy).read_bytes() == content


def test_a_second_descriptor_open_across_the_conflict_follows_the_copy(
    server: ServerProc, mount_factory
) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "0.2"])
    server.put(m.repo, "doc.txt", b"base\n")
    reader = os.open(m.path / "doc.txt", os.O_RDONLY)
    fd = os.open(m.path / "doc.txt", os.O_RDWR | os.O_TRUNC)
    try:
        _lose_a_conflict(server, m, fd)
        os.close(fd)
        fd = -1
        # The reader holds the inode that lost: it keeps reading the local lineage.
        assert os.pread(reader, 100, 0) == b"mine, first part\n"
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(reader)
    m.sync()
    tree = server.tree(m.repo)
    assert tree.pop("doc.txt") == b"w2: version 2 (remote)\n"
    assert list(tree.values()) == [b"mine, first part\n"]


def test_theirs_saves_what_is_written_after_estale(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "0.2", "--on-conflict", "theirs"])
    server.put(m.repo, "doc.txt", b"base\n")
    fd = os.open(m.path / "doc.txt", os.O_RDWR | os.O_TRUNC)
    try:
        _lose_a_conflict(server, m, fd)
        os.write(fd, b"mine, second part\n")
    finally:
        os.close(fd)
    m.sync()
    assert server.tree(m.repo) == {"doc.txt": b"w2: version 2 (remote)\n"}
    assert (m.path / "doc.txt").read_bytes() == b"w2: version 2 (remote)\n"
    saved = list(m.state_dir.rglob("conflicts/*/doc.txt"))
    assert [p.read_bytes() for p in saved] == [b"mine, first part\nmine, second part\n"]
