"""Whether the remote answers, as seen by every part of the vfs that talks to it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from repomount.remotes.base import RemoteError, Unavailable

log = logging.getLogger(__name__)


class Health:
    def __init__(self) -> None:
        self.online = True
        self.last_error: str | None = None
        # Called when the remote answers again after being unreachable (the flusher
        # then retries at once instead of waiting out each change's backoff).
        self.on_back: Callable[[], None] | None = None

    def ok(self) -> None:
        if self.online:
            return
        log.info("remote reachable again")
        self.online = True
        if self.on_back is not None:
            self.on_back()

    def failed(self, e: RemoteError) -> None:
        self.last_error = f"{type(e).__name__}: {e.message}"
        if isinstance(e, Unavailable):
            if self.online:
                log.warning(
                    "remote unavailable (%s); serving from cache, queueing writes", e.message
                )
            self.online = False
