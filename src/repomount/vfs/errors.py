"""Errors the vfs raises toward the fuse layer, which maps them to errno in one place."""

from __future__ import annotations

import errno as _errno


class FsError(Exception):
    """A filesystem-level failure with the errno a local filesystem would give."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno


def not_found(what: str = "") -> FsError:
    return FsError(_errno.ENOENT, what)


def exists(what: str = "") -> FsError:
    return FsError(_errno.EEXIST, what)
