"""What no remote stores is refused at once with EPERM (what Linux answers for a
filesystem without it), and nothing is made: a hard link, a device node, a FIFO, a
Unix socket bound to a path in the mount (pjdfstest's link, mknod, mkfifo and bind)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("native")


def _bind(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))


def test_hard_links_devices_fifos_and_sockets_are_eperm(mnt: MountProc) -> None:
    (mnt.path / "f").write_text("x\n")
    makers: dict[str, Callable[[Path], object]] = {
        "link": lambda p: os.link(mnt.path / "f", p),
        "fifo": lambda p: os.mkfifo(p, 0o644),
        "socket": _bind,
    }
    if os.geteuid() == 0:  # (others get EPERM from the kernel before the mount is asked)
        makers["char"] = lambda p: os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
        makers["block"] = lambda p: os.mknod(p, 0o644 | stat.S_IFBLK, os.makedev(7, 0))
    for what, make in makers.items():
        with pytest.raises(OSError) as e:
            make(mnt.path / what)
        assert e.value.errno == errno.EPERM, what
        assert not os.path.lexists(mnt.path / what), what
    assert os.listdir(mnt.path) == ["f"]
    assert os.stat(mnt.path / "f").st_nlink == 1


def test_mknod_of_a_regular_file_makes_an_empty_file(mnt: MountProc, server: ServerProc) -> None:
    """mknod(2) with S_IFREG (os.mknod's default) makes an empty file, as on Linux's
    local filesystems, and it reaches the remote; a name taken is EEXIST."""
    os.mknod(mnt.path / "empty", 0o640 | stat.S_IFREG)
    st = os.stat(mnt.path / "empty")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o640
    with pytest.raises(FileExistsError):
        os.mknod(mnt.path / "empty")
    (mnt.path / "empty").write_text("now\n")
    mnt.sync()
    assert server.tree(mnt.repo) == {"empty": b"now\n"}


def test_o_tmpfile_and_xattrs_are_eopnotsupp(mnt: MountProc, server: ServerProc) -> None:
    """An unnamed temporary file (`open(O_TMPFILE)`) and extended attributes are
    EOPNOTSUPP, which programs take as "not on this filesystem" (they fall back to a
    named temporary file; `cp -a`, `rsync -X` and `tar --xattrs` go on without the
    attributes), and nothing is made."""
    with pytest.raises(OSError) as e:
        os.open(mnt.path, os.O_TMPFILE | os.O_RDWR, 0o600)
    assert e.value.errno == errno.EOPNOTSUPP
    (mnt.path / "f").write_text("x\n")
    calls: dict[str, Callable[[], object]] = {
        "set": lambda: os.setxattr(mnt.path / "f", "user.k", b"v"),
        "get": lambda: os.getxattr(mnt.path / "f", "user.k"),
        "list": lambda: os.listxattr(mnt.path / "f"),
        "remove": lambda: os.removexattr(mnt.path / "f", "user.k"),
    }
    for what, call in calls.items():
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EOPNOTSUPP, what
    assert os.listdir(mnt.path) == ["f"]
    mnt.sync()
    assert server.tree(mnt.repo) == {"f": b"x\n"}
