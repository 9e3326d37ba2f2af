"""Whether the remote answers, as seen by every part of the vfs that talks to it."""

from __future__ import annotations

import logging

from repomount.remotes.base import RemoteError, Unavailable

log = logging.getLogger(__name__)


class Health:
    def __init__(self) -> None:
        self.online = True
        self.last_error: str | None = None

    def ok(self) -> None:
        if not self.online:
            log.info("remote reachable again")
        self.online = True

    def failed(self, e: RemoteError) -> None:
        self.last_error = f"{type(e).__name__}: {e.message}"
        if isinstance(e, Unavailable):
            if self.online:
                log.warning(
                    "remote unavailable (%s); serving from cache, queueing writes", e.message
                )
            self.online = False
