"""Restarts keep everything; a kill -9 mid-upload or mid-commit leaves nothing half-done."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from pathlib import Path

import httpx

from support.server import ServerProc, file_url


def blobs_are_whole(data_dir: Path) -> int:
    """Every blob file holds exactly the content its name promises; returns how many."""
    count = 0
    for blob in (data_dir / "blobs").glob("*/*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        count += 1
    return count


def test_restart_keeps_content_and_history(server: ServerProc) -> None:
    server.create_repo("r")
    server.put("r", "a", b"one")
    server.put("r", "a", b"two")
    server.put("r", "d/b", b"three")
    url, port = server.url, server.port
    server.restart()
    assert (server.url, server.port) == (url, port)
    assert server.tree("r") == {"a": b"two", "d/b": b"three"}
    with server.client() as c:
        assert c.get(file_url("r", "a"), params={"at": "1"}).content == b"one"
        changes = c.get("/v1/repos/r/changes", params={"since": "0"}).json()
        assert changes["head"] == "3"
        assert len(changes["changes"]) == 4
        # The idempotency record survives too.
        first = c.put(file_url("r", "k"), content=b"k", headers={"Idempotency-Key": "x"})
    server.restart()
    with server.client() as c:
        again = c.put(file_url("r", "k"), content=b"k", headers={"Idempotency-Key": "x"})
        assert again.json() == first.json()
        assert c.get("/v1/repos/r").json()["head"] == "4"


def test_kill_9_mid_upload_leaves_no_partial_blob(server: ServerProc) -> None:
    server.create_repo("r")
    server.put("r", "small", b"fine")
    size = 16 << 20
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        head = (
            f"PUT /v1/repos/r/files/big HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Length: {size}\r\n\r\n"
        )
        sock.sendall(head.encode())
        sock.sendall(b"\xab" * (4 << 20))  # a quarter of the body
        tmp = server.data_dir / "tmp"
        deadline = time.monotonic() + 10
        while not any(f.stat().st_size > 0 for f in tmp.iterdir()):
            assert time.monotonic() < deadline, "the upload never reached the spool"
            time.sleep(0.02)
        server.kill()
    finally:
        sock.close()
    server.start()
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert blobs_are_whole(server.data_dir) == 1
    assert server.tree("r") == {"small": b"fine"}
    with server.client() as c:
        assert c.get(file_url("r", "big")).status_code == 404
        assert c.get("/v1/repos/r").json()["head"] == "1"


def test_kill_9_during_big_commit_is_all_or_nothing(server: ServerProc) -> None:
    server.create_repo("r")
    server.put("r", "before", b"b")
    ops = [
        {"op": "write", "path": f"d/{i}", "content_b64": base64.b64encode(b"%d" % i).decode()}
        for i in range(2000)
    ]
    outcome: list[object] = []

    def send() -> None:
        try:
            with server.client() as c:
                outcome.append(c.post("/v1/repos/r/commits", json={"operations": ops}).status_code)
        except httpx.HTTPError as error:
            outcome.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.3)
    server.kill()
    sender.join(30)
    server.start()
    tree = server.tree("r")
    with server.client() as c:
        head = c.get("/v1/repos/r").json()["head"]
    if head == "1":
        assert tree == {"before": b"b"}
    else:
        assert head == "2"
        assert len(tree) == 2001
        assert tree["d/1999"] == b"1999"
    blobs_are_whole(server.data_dir)
