"""The kernel's read-ahead for this mount.

A FUSE mount gets its own backing device (one per connection), and the kernel reads
ahead on it at most its `read_ahead_kb`: 128 KiB by default, so a file read in order
comes in 128 KiB requests, each a round of the kernel and this daemon. A larger window
means fewer, larger requests: on loopback a cold sequential read of a 256 MiB file
went from about 160 to about 210 MiB/s with 1 MiB, before any other change. gcsfuse
documents the same setting for the same reason.

FUSE_INIT can only lower the window, so it is set where the kernel keeps it, in sysfs,
which only root may write (and not where /sys is read-only, as in many containers).
Without that right the mount keeps the kernel's default.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from repomount import mounts

log = logging.getLogger(__name__)

BDI = Path("/sys/class/bdi")
_DEVICE = re.compile(r"[0-9]+:[0-9]+")


def tune(
    size: int,
    fuse_options: Sequence[str],
    mine: mounts.Mount | None,
    st: os.stat_result,
    bdi: Path = BDI,
) -> bool:
    """Set the mount's read-ahead to `size` bytes (0: leave it), `st` being a stat of
    its root once it answers. A user's own `-o max_readahead=` wins; a device that is
    not the one the mount table gave for this mount (something else mounted on top
    meanwhile) is left alone. True if it was set."""
    if not size:
        return False
    if any(o.startswith("max_readahead=") for o in fuse_options):
        log.info("read-ahead: -o max_readahead given, --read-ahead not applied")
        return False
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if mine is not None and mine.device != device:
        log.warning("read-ahead not set: %s is device %s, not ours (%s)", mine.mountpoint,
                    device, mine.device)  # fmt: skip
        return False
    return set_read_ahead(device, size, bdi)


def set_read_ahead(device: str, size: int, bdi: Path = BDI) -> bool:
    """Set the read-ahead of the backing device `device` ("major:minor") to `size`
    bytes (rounded up to KiB); True if it was set."""
    if not _DEVICE.fullmatch(device):
        log.warning("read-ahead not set: %r is not a device number", device)
        return False
    kib = max(1, -(-size // 1024))
    try:
        (bdi / device / "read_ahead_kb").write_text(f"{kib}\n")
    except OSError as e:  # not root (expected: said quietly), or no sysfs
        quiet = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "read-ahead left at the kernel's default: %s",
            e.strerror or e,
        )
        return False
    log.debug("read-ahead of %s set to %d KiB", device, kib)
    return True
