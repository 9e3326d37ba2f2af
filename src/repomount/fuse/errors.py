"""The one place where vfs and remote errors become errno values for the kernel."""

from __future__ import annotations

import errno
import logging

from repomount.remotes import base as rb
from repomount.vfs.errors import FsError

log = logging.getLogger(__name__)

_REMOTE_ERRNO: list[tuple[type[rb.RemoteError], int]] = [
    (rb.NotFound, errno.ENOENT),
    (rb.Conflict, errno.ESTALE),
    (rb.PreconditionRequired, errno.EIO),
    (rb.Unavailable, errno.EIO),
    (rb.Unauthorized, errno.EACCES),
    (rb.TooLarge, errno.EFBIG),
    (rb.InvalidPath, errno.EINVAL),
    (rb.Unsupported, errno.EPERM),  # one errno for "this remote cannot": see vfs require()
]


def to_errno(exc: BaseException) -> int:
    if isinstance(exc, FsError):
        return exc.errno
    if isinstance(exc, rb.RemoteError):
        for kind, code in _REMOTE_ERRNO:
            if isinstance(exc, kind):
                return code
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO
