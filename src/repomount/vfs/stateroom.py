"""Room on the state directory's disk for the journal, when that disk fills up.

Two parts, as a filesystem keeps blocks for its own metadata:
- spool writes (the content of files being written) may not take the last
  RESERVE_BYTES (`room_for`): the close() after them must be able to journal them;
- a `reserve` file beside the journal holds RESERVE_BYTES more, given back when the
  disk fills from elsewhere (`before_transaction`). Booking what the remote took
  deletes the content files it sent: it must not wait for room it would free itself.
  SQLite rolls a transaction back when its COMMIT finds the disk full, so the room must
  be there before the transaction begins. The reserve is made again once content files
  freed enough room (`after_release`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_FILE = "reserve"  # in the state directory, beside journal.db
RESERVE_BYTES = 1 << 20
ROOM_RECHECK = 64 << 20  # below this much free room, the disk is asked each time


class StateRoom:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._reserve = state_dir / RESERVE_FILE
        self._reserved = False  # whether the reserve holds its room
        self._room, self._room_at = 0, -math.inf  # room_for's estimate, and its time
        self._make_reserve()

    def room_for(self, n: int) -> bool:
        """Whether `n` more bytes may go to the disk, leaving the journal RESERVE_BYTES.
        The disk is asked when the room may be near its end, or once a second."""
        now = time.monotonic()
        if self._room - n < ROOM_RECHECK or now - self._room_at > 1.0:
            self._room, self._room_at = self._free() - RESERVE_BYTES, now
        if self._room < n:
            return False
        self._room -= n
        return True

    def before_transaction(self) -> None:
        """The reserve's room goes back to the disk when the disk is nearly full."""
        if self._reserved and not self.room_for(0):
            self.use_reserve()

    def use_reserve(self) -> None:
        """Give the reserve's room back to the disk, for the journal to use."""
        if self._reserved:
            self._reserved = False
            self._reserve.unlink(missing_ok=True)
            log.warning("the state directory's disk is full: the journal uses its reserve")

    def after_release(self) -> None:
        """Content files were deleted: the reserve again, once there is ample room."""
        if not self._reserved and self._free() >= 4 * RESERVE_BYTES:
            self._make_reserve()

    def _make_reserve(self) -> None:
        try:
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            self._reserved = True
        except OSError:  # no room for it now; after_release tries again
            self._reserve.unlink(missing_ok=True)

    def _free(self) -> int:
        try:
            st = os.statvfs(self._dir)
        except OSError:  # (unknown: nothing is refused for it)
            return 1 << 62
        return st.f_bavail * st.f_frsize


BLOCK = 4096  # the block size statfs reports in
MAX_FILES = 1 << 24  # inodes statfs reports: the mount numbers its own


def statfs(state_dir: Path, inodes: int, namemax: int) -> dict[str, int]:
    """What `df` and statfs(2) show for the mount: the state directory's disk, which
    holds every write until the remote has it, so its free room is what limits writes
    (less the journal's RESERVE_BYTES: a write past that is ENOSPC). `inodes` in use."""
    try:
        st = os.statvfs(state_dir)
        total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
        avail = st.f_bavail * st.f_frsize
    except OSError:  # (the directory is gone: writes fail anyway; nothing to show)
        total = free = avail = 0
    files_free = max(0, MAX_FILES - inodes)
    return {
        "f_bsize": BLOCK,
        "f_frsize": BLOCK,
        "f_blocks": total // BLOCK,
        "f_bfree": max(0, free - RESERVE_BYTES) // BLOCK,
        "f_bavail": max(0, avail - RESERVE_BYTES) // BLOCK,
        "f_files": MAX_FILES,
        "f_ffree": files_free,
        "f_favail": files_free,
        "f_namemax": namemax,
    }
