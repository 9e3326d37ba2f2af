"""What the metadata tests (tests/mount/test_metadata.py, test_directory_times_names_links.py
and test_kept_modes.py) make and look at below a root: a mount, or a local directory
that shows what a local filesystem does."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

ATIME_NS = 1_000_000_123
MTIME_NS = 2_000_000_456


def put_file(root: Path, rel: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"content of " + rel.encode() + b"\n")


def dir_with_a_file(root: Path, rel: str) -> None:
    """A directory that exists on every backend's remote: it holds a file."""
    put_file(root, f"{rel}/keep.txt")


def mode_of(rel: str) -> Callable[[Path], object]:
    return lambda root: oct(stat.S_IMODE(os.stat(root / rel).st_mode))


def errno_of(fn: Callable[[], object]) -> str:
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e.errno))
    return "no error"
