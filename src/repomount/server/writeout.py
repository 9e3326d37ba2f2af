"""Start the disk writing a large upload while it still arrives.

A blob is made durable by an fsync once its last byte is in (blobs.py). For a 256 MiB
upload that fsync wrote all 256 MiB at the end, 0.1 s here, while the disk had sat idle
during the upload. Asking the kernel to begin writing each 8 MiB as it lands
(sync_file_range(2) with SYNC_FILE_RANGE_WRITE: start, do not wait; store.py's
WRITE_OUT_EVERY) leaves the fsync almost nothing to do. It only starts the writing:
durability still comes from the fsync.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import trio

from repomount.server import libc

SYNC_FILE_RANGE_WRITE = 2  # (linux/fs.h)


def _find_sync_file_range() -> Callable[[int, int, int], int] | None:
    call = libc.function(
        "sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    )
    if call is None:
        return None

    def sync_range(fd: int, offset: int, length: int) -> int:
        return int(call(fd, offset, length, SYNC_FILE_RANGE_WRITE))

    return sync_range


_SYNC_FILE_RANGE = _find_sync_file_range()


def start_write_out(fd: int, offset: int, length: int) -> None:
    """Have bytes [offset, offset + length) of `fd` start going to the disk, from a
    worker thread (the call can wait for the disk's queue), through a descriptor of its
    own (the spool may be closed meanwhile). Advisory: a failure changes nothing."""
    if _SYNC_FILE_RANGE is None:
        return
    try:
        own = os.dup(fd)
    except OSError:  # (out of descriptors, say: the fsync will do it all)
        return
    sync_range = _SYNC_FILE_RANGE

    def write_out() -> None:
        try:
            sync_range(own, offset, length)
        finally:
            os.close(own)

    trio.lowlevel.start_thread_soon(write_out, lambda _result: None)
