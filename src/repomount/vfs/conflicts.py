"""Conflict policies (defined with the other mount options) and the names conflict
copies get."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from repomount.options import Policy

__all__ = ["Policy", "conflict_name", "save_copy"]


def conflict_name(
    path: str, *, now: float | None = None, host: str | None = None, n: int = 1
) -> str:
    """`dir/report.txt` -> `dir/report.conflict-20261123T174500Z-host.txt` (the `n`th
    of one second: `...-host-2.txt`)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    host = (host or socket.gethostname().split(".")[0] or "host").replace("/", "_")
    head, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # no extension, or a dotfile like ".bashrc"
        stem, ext = name, ""
    nth = f"-{n}" if n > 1 else ""
    new = f"{stem}.conflict-{stamp}-{host}{nth}" + (f".{ext}" if ext else "")
    return f"{head}/{new}" if head else new


def save_copy(conflicts_dir: Path, path: str, blob: Path) -> Path:
    """Keep a local version that lost (policy theirs) under the state directory."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = conflicts_dir / stamp / path
    n = 1
    while dest.exists():  # another in the same second: never over it
        n += 1
        dest = conflicts_dir / f"{stamp}-{n}" / path
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(blob, dest)
    return dest
