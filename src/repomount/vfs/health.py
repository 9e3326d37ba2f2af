"""Whether the remote answers, as seen by every part of the vfs that talks to it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from repomount.remotes.base import RemoteError, Unavailable

log = logging.getLogger(__name__)


class Health:
    def __init__(self) -> None:
        self.online = True
        self.since = time.time()  # when `online` last changed (or the mount began)
        # The remote's last failure, only while it is current: the next answer that
        # succeeds clears it (`status` shows no error from before the remote came back).
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        # Why the state directory could not be written (its disk full), while it is
        # current: the flusher's next round that books its work clears it.
        self.local_error: str | None = None
        # The remote's last answer was "busy" (it is there), and none succeeded, nor
        # did a request find it unreachable, since.
        self.busy = False
        # Called when the remote answers again after being unreachable (the flusher
        # then retries at once instead of waiting out each change's backoff).
        self.on_back: Callable[[], None] | None = None

    @property
    def usable(self) -> bool:
        """Whether asking the remote now is worth it: it is online and its last answer
        was not "busy" (423, 429). While it is not, listings serve what is known, as
        offline, rather than ask again at every access."""
        return self.online and not self.busy

    @property
    def error(self) -> str | None:
        """What is wrong now: the remote's last failure, else the state directory's."""
        return self.last_error or self.local_error

    def ok(self) -> None:
        self.last_error = self.last_error_at = None
        self.busy = False
        if self.online:
            return
        log.info("remote reachable again")
        self.online = True
        self.since = time.time()
        if self.on_back is not None:
            self.on_back()

    def failed(self, e: RemoteError) -> None:
        self.last_error = f"{type(e).__name__}: {e.message}"
        self.last_error_at = time.time()
        if isinstance(e, Unavailable) and e.busy:  # (there, so not offline)
            self.busy = True
        elif isinstance(e, Unavailable):
            self.busy = False  # (unreachable now: `usable` is False all the same)
            if self.online:
                log.warning(
                    "remote unavailable (%s); serving from cache, queueing writes", e.message
                )
                self.since = self.last_error_at
            self.online = False
