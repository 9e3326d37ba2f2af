"""HTTP/1.1 over a raw socket, for what httpx will not do: declare a body it never
sends, send headers as given (duplicates, odd bytes), or watch for an answer that
comes before the body has ended (the server refused without reading it all).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence

from support.server import ServerProc


class RawRequest:
    """One request on its own connection. `length` None: a chunked body."""

    def __init__(
        self,
        server: ServerProc,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] | None = None,
        *,
        length: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.chunked = length is None
        self.method = method
        if headers is None:
            headers = [("Authorization", f"Bearer {server.token}")]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(
            "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
        )
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.sent = 0  # body bytes sent

    def answered(self, wait: float = 0.0) -> bool:
        """The server has answered (or closed) already."""
        return bool(select.select([self.sock], [], [], wait)[0])

    def send(self, data: bytes) -> None:
        frame = f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data
        self.sock.sendall(frame)
        self.sent += len(data)

    def stream(self, total: int, chunk: int = 1 << 20) -> int:
        """Send up to `total` body bytes, stopping as soon as the server answers or
        stops reading (it closed); the bytes sent. Ends a chunked body that went whole."""
        block = b"x" * chunk
        try:
            while self.sent < total and not self.answered():
                self.send(block[: min(chunk, total - self.sent)])
            if self.chunked and self.sent >= total:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed the connection
            pass
        return self.sent

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lowercase names) and body of the answer (by Content-Length,
        else up to the close)."""
        data = b""
        while b"\r\n\r\n" not in data:
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError(f"connection closed before an answer: {data!r}")
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if self.method == "HEAD" else int(headers.get("content-length", -1))
        while length < 0 or len(body) < length:
            try:
                more = self.sock.recv(65536)
            except OSError:
                break
            if not more:
                break
            body += more
        self.sock.close()
        return int(status_line.split(" ", 2)[1]), headers, body

    def close(self) -> None:
        self.sock.close()
