"""The calls a random-operations exerciser (xfstests' fsx) probes at its start, on a
real mount: fallocate(2) is refused in every mode with EOPNOTSUPP (the FUSE library
has no handler for it; fsx then disables those operations), posix_fallocate(3) works
through the C library's fallback, copy_file_range(2) works through the kernel's, and a
shared mapping's writes land. The server then holds exactly what a local disk holds."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct

import pytest

from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.backends("native")

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) == 0:
        return 0
    return ctypes.get_errno()


def test_fallocate_is_refused_and_the_rest_of_fsx_s_calls_work(
    server: ServerProc, mnt: MountProc
) -> None:
    path = mnt.path / "f.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"0123456789")
        for mode in (
            0,
            FALLOC_FL_KEEP_SIZE,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            FALLOC_FL_ZERO_RANGE,
        ):
            assert _fallocate(fd, mode, 0, 4096) == errno.EOPNOTSUPP, mode
        with pytest.raises(OSError) as e:  # (no reflinks: fsx disables clone range)
            fcntl.ioctl(fd, FICLONERANGE, struct.pack("qQQQ", fd, 0, 0, 0))
        assert e.value.errno in (errno.EOPNOTSUPP, errno.ENOTTY)
        assert os.fstat(fd).st_size == 10  # (nothing changed by those)
        os.posix_fallocate(fd, 0, 20)  # the C library writes the zeros itself
        assert os.copy_file_range(fd, fd, 4, 0, 12) == 4  # "0123" at 12
        with mmap.mmap(fd, 20) as mm:
            mm[16:20] = b"MMAP"
            mm.flush()
    finally:
        os.close(fd)
    want = b"0123456789\0\0" + b"0123" + b"MMAP"
    assert path.read_bytes() == want
    mnt.sync()
    assert server.tree(mnt.repo) == {"f.bin": want}
