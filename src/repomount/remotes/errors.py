"""The typed errors every remote adapter raises: the one way a failure crosses the
boundary between an adapter and the vfs (`remotes.base` re-exports them all)."""

from __future__ import annotations


class RemoteError(Exception):
    """Base of every error an adapter raises. `retryable` says whether trying the same
    request again later may succeed (network trouble, 5xx, 429, 423)."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code  # the service's own error code when it sent one ("path_conflict")


class NotFound(RemoteError):
    pass


class Conflict(RemoteError):
    """A precondition failed: the remote has another version than expected."""

    def __init__(
        self,
        message: str,
        *,
        current: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.current = current


class PreconditionRequired(RemoteError):
    pass


class Unavailable(RemoteError):
    """Not now: try again later. `busy`: the remote answered, and is there, but could
    not do it now (423 locked by another operation, 429 too many requests, a tree that
    kept changing while it was listed); otherwise it is away (no answer, 5xx)."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        busy: bool = False,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after
        self.busy = busy or status in (423, 429)


class Unauthorized(RemoteError):
    pass


class TooLarge(RemoteError):
    pass


class InvalidPath(RemoteError):
    pass


class Aborted(RemoteError):
    """Not applied because another change of the same atomic batch failed; send it again."""

    retryable = True


class Gone(RemoteError):
    """A change feed position (or history point) the remote no longer keeps: re-list."""


class Unsupported(RemoteError):
    """The remote cannot do this at all (e.g. an empty directory on Relace)."""


class ProtocolError(RemoteError):
    """The remote answered something this adapter does not understand."""
