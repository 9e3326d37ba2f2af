"""Encoding a tar stream member by member, so a body streams without a temp file.

Shared by the server (the answer of POST /read, Terminal Use archives) and the native
adapter (a pack of blobs for POST /blobs); tarread.py is the reading side. The names
of the native protocol's tar conventions live here too, for both sides."""

from __future__ import annotations

import tarfile

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
VERSION_KEY = "repomount.version"  # the pax record of a POST /read member: its version
MISSING_NAME = "MISSING"  # the last member of a POST /read answer: paths not sent


def member_header(
    name: str, size: int, *, mtime: float = 0, mode: int = 0o644, pax: dict[str, str] | None = None
) -> bytes:
    """The header blocks of a regular-file member (pax format: long names, UTF-8)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = mode
    info.type = tarfile.REGTYPE
    info.pax_headers = dict(pax or {})
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def symlink_header(
    name: str, target: str, *, mtime: float, mode: int, pax: dict[str, str] | None = None
) -> bytes:
    """The header blocks of a symlink member (no content; a long target goes in pax)."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = int(mtime)
    info.mode = mode
    info.pax_headers = dict(pax or {})
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def padding(size: int) -> bytes:
    """Zero bytes that complete a member's content of `size` bytes to whole blocks."""
    return b"\0" * (-size % BLOCK)
