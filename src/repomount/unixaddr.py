"""Unix socket addresses of any length.

A socket address holds at most 107 bytes of path, and a legitimate XDG_RUNTIME_DIR,
TMPDIR or NOTIFY_SOCKET can be longer (a deep temporary directory, a container's
runtime directory). Such a socket is reached through a descriptor of its directory
instead, as /proc/self/fd/N/NAME: short whatever the directory's own path, and the
kernel resolves it to the very same directory entry (Linux; FUSE needs Linux anyway).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUN_PATH = 108  # bytes of sockaddr_un.sun_path, the terminating NUL included


@contextmanager
def address(path: str | Path) -> Iterator[str]:
    """`path` as bind(), connect() and sendto() take it: itself when it fits, else
    through a descriptor of its directory, open while the block runs. OSError when
    the directory cannot be opened (FileNotFoundError when it is missing). An abstract
    address (a leading NUL) names no file: it is given back as it is."""
    raw = os.fsencode(path)
    if len(raw) < SUN_PATH or raw.startswith(b"\0"):
        yield os.fspath(path)
        return
    if not os.path.isdir("/proc/self/fd"):
        raise OSError(
            errno.ENAMETOOLONG,
            f"{os.fspath(path)}: too long for a socket address, and /proc is not mounted",
        )
    where = Path(path)
    fd = os.open(where.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{where.name}"
    finally:
        os.close(fd)
