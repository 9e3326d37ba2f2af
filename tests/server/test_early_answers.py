"""An answer given before the request's body was read (a 404 for a repo that does not
exist, decided from the path) closes its connection, and says so with `Connection:
close`. Without it, a client that reused the connection for its next request got no
answer at all: the official Relace SDK's next call failed with "Server disconnected
without sending a response" (seen once in CI, where the body's segment came late)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

from support.server import ServerProc

UNKNOWN = "6f1c2f7e-0000-4000-8000-000000000000"


def _head_of(sock: socket.socket) -> bytes:
    """One answer's head (lower case); its body is read and dropped."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    head = head.lower()
    length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head


def test_an_answer_before_the_body_says_the_connection_closes(server: ServerProc) -> None:
    url = urlsplit(server.url)
    body = json.dumps({"metadata": {"a": "b"}}).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST /relace/v1/repo/{UNKNOWN}/update HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )  # (the body comes later, as a second segment may)
        head = _head_of(sock)
        assert head.startswith(b"http/1.1 404")
        assert b"\r\nconnection: close" in head
        time.sleep(0.1)
        sock.sendall(body)


def test_an_answer_after_the_body_keeps_the_connection(server: ServerProc) -> None:
    url = urlsplit(server.url)
    body = json.dumps({"metadata": {"a": "b"}}).encode()
    request = (
        f"POST /relace/v1/repo/{UNKNOWN}/update HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        for _ in range(2):  # (the second on the same connection)
            sock.sendall(request)
            head = _head_of(sock)
            assert head.startswith(b"http/1.1 404") and b"connection: close" not in head
