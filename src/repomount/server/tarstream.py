"""Encoding a tar stream member by member, so POST /read can stream without a temp file."""

from __future__ import annotations

import tarfile

BLOCK = tarfile.BLOCKSIZE
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
VERSION_KEY = "repomount.version"
MISSING_NAME = "MISSING"


def member_header(
    name: str, size: int, *, mtime: float, mode: int, pax: dict[str, str] | None = None
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
