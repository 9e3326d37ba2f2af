"""systemd's service notifications (sd_notify), by hand: one datagram to $NOTIFY_SOCKET.

A `Type=notify` unit (systemd/repomount@.service) learns from the mount that it is
ready (`READY=1`, once the mount answers), what it is doing (`STATUS=` lines with the
changes pending) and that it is stopping (`STOPPING=1`, then the drain's progress).
Without NOTIFY_SOCKET in the environment nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

from repomount import unixaddr
from repomount.printable import printable

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def listening() -> bool:
    """Whether a service manager waits for notifications."""
    return bool(os.environ.get(ENV))


def notify(*assignments: str) -> bool:
    """Send `KEY=value` lines to the service manager; whether a manager was told."""
    address = os.environ.get(ENV, "")
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # none, or a kind of address this does not speak (vsock)
    message = "\n".join(assignments).encode()
    try:
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s,
            unixaddr.address(address) as reachable,
        ):
            s.sendto(message, reachable)
    except OSError as e:
        log.warning("cannot notify the service manager at %s: %s", os.environ.get(ENV), e)
        return False
    return True


def _changes(n: int) -> str:
    return "1 change" if n == 1 else f"{n} changes"


class Reporter:
    """What a mount tells systemd, each STATUS= line once (none repeated)."""

    def __init__(self, src: str, mountpoint: str) -> None:
        self.src = src
        self.mountpoint = mountpoint
        self._last = ""
        self._stopping = False

    def _status(self, text: str, *more: str) -> None:
        if text != self._last or more:
            self._last = text
            # (one line: a newline in a remote's error would start an assignment of its own)
            notify(*more, f"STATUS={printable(text)}")

    def ready(self, error: str | None) -> None:
        if error is None:
            self._status(f"mounted {self.src} on {self.mountpoint}", "READY=1")
        else:
            self._status(f"not mounted: {error}")

    def running(self, pending: int, online: bool, error: str | None) -> None:
        what = f"{_changes(pending)} pending" if pending else "nothing pending"
        if online:
            self._status(f"online, {what}")
        else:
            self._status(f"offline ({error or 'the remote does not answer'}), {what}")

    def stopping(self, pending: int, seconds_left: float, done: bool) -> None:
        first = () if self._stopping else ("STOPPING=1",)
        self._stopping = True
        if done:
            text = (
                f"stopped: {_changes(pending)} not sent stay in the journal for the next start"
                if pending
                else "stopped: everything sent"
            )
        elif pending:
            text = f"stopping: sending {_changes(pending)}, {seconds_left:.0f} s left"
        else:
            text = "stopping: nothing to send"
        self._status(text, *first)
