"""An upload to the Relace face that holds the repo's lock for as long as a test wants.

The face takes a repo's lock when an upload's headers arrive and keeps it while the
body streams in, so a PUT whose body is sent in two halves keeps the repo busy between
them: other writers get 423 meanwhile. A raw socket, so that the test decides when the
body ends, and sees at once when the server refused the upload early (it got 423
itself because another writer held the lock when it arrived).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable

from support.server import ServerProc


class SlowUpload:
    def __init__(self, server: ServerProc, path: str) -> None:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {server.token}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.sock.sendall(head.encode() + _chunk(b"first half, "))

    def answered(self) -> bool:
        """The server answered before the body ended: it refused the upload."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def finish(self) -> int:
        """Send the rest of the body; the response's status."""
        self.sock.sendall(_chunk(b"second half") + b"0\r\n\r\n")
        status = int(self.sock.recv(4096).split(b" ", 2)[1])
        self.sock.close()
        return status

    def close(self) -> None:
        self.sock.close()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def hold_lock(server: ServerProc, path: str, probe: Callable[[], bool]) -> SlowUpload:
    """Start a slow upload to `path` and return once it holds the repo's lock.

    `probe()` tries a write to the same repo and returns True when it got 423 (the
    lock is held); a probe that came first may make the upload itself get 423, and
    then the upload starts again."""
    upload = SlowUpload(server, path)
    for _ in range(500):
        if probe():
            return upload
        if upload.answered():
            upload.close()
            upload = SlowUpload(server, path)
    upload.close()
    raise AssertionError("the upload never held the repo's lock")
