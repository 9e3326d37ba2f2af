"""A download bounded by the size its listing gave: a server sending far more than it
listed is refused as it goes, not after filling the disk (`remotes.base` re-exports
these names)."""

from __future__ import annotations

from typing import BinaryIO

from repomount.remotes.errors import ProtocolError

DOWNLOAD_SLACK = 1 << 20


def allowed(size: int) -> int:
    """The most bytes a download of a file listed as `size` bytes long may bring."""
    return 2 * size + DOWNLOAD_SLACK


def too_long(what: str, size: int, limit: int | None = None) -> ProtocolError:
    """An answer past `limit` bytes (default: allowed(size)) for a file listed as `size`."""
    limit = allowed(size) if limit is None else limit
    return ProtocolError(f"{what}: the answer passes {limit} bytes (listed: {size})")


class Capped:
    """A download's destination: writes through to `dest`, up to allowed(size) bytes.
    A server sending far more than the listing said (an endless chunked body runs at
    the link's speed, which no timeout catches) would otherwise fill the cache's disk,
    often the state directory's too, before the content check at the end refused it;
    the slack leaves room for a service whose listed sizes are not exact."""

    def __init__(self, dest: BinaryIO, size: int, what: str) -> None:
        self._dest = dest
        self._size = size
        self._left = allowed(size)
        self._what = what

    def write(self, data: bytes) -> int:
        if len(data) > self._left:
            raise too_long(self._what, self._size)
        self._left -= len(data)
        return self._dest.write(data)
