"""Restarts keep everything; a kill -9 mid-upload or mid-commit leaves nothing half-done."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from repomount.server.sqlite_commit import PAUSE_COMMIT_ENV, pause_marker_for_test
from support.blobkinds import all_blobs, stored_content
from support.server import ServerProc, file_url
from support.util import sha, wait_until


def blobs_are_whole(data_dir: Path) -> int:
    """Every blob, file or row, holds exactly the content its name promises; returns how
    many."""
    blobs = all_blobs(data_dir)
    for name in blobs:
        content = stored_content(data_dir, name)
        assert content is not None and hashlib.sha256(content).hexdigest() == name
    return len(blobs)


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


def test_kill_9_mid_commit_leaves_none_of_it_and_a_retry_lands(
    server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after writing all its rows but before its transaction commits, a commit
    leaves nothing behind, not even its idempotency record; the same commit sent again
    lands whole. The test-only pause point REPOMOUNT_TEST_PAUSE_COMMIT holds the server
    at exactly that moment, so the kill never lands before or after the commit."""
    server.create_repo("r")
    blob = b"shared content"
    with server.client() as c:
        setup = [
            {"op": "write", "path": name, "content_b64": b64(name.encode())}
            for name in ("before", "keep", "gone")
        ]
        assert c.post("/v1/repos/r/commits", json={"operations": setup}).status_code == 201
        assert c.put(f"/v1/repos/r/blobs/{sha(blob)}", content=blob).status_code == 201
    before = server.tree("r")
    # Thousands of rows: SQLite spills pages of the open transaction into the WAL file
    # before it commits, and recovery must ignore them.
    ops: list[dict[str, object]] = [
        {"op": "write", "path": f"d/{i // 100}/{i}", "blob": sha(blob)} for i in range(5000)
    ]
    ops += [
        {"op": "write", "path": "before", "content_b64": b64(b"after")},
        {"op": "write", "path": "inline", "content_b64": b64(b"new")},
        {"op": "rename", "from": "keep", "to": "moved"},
        {"op": "delete", "path": "gone"},
    ]
    body = {"operations": ops, "idempotency_key": "mid-commit"}

    marker = tmp_path / "commit-paused"
    monkeypatch.setenv(PAUSE_COMMIT_ENV, str(marker))
    server.restart()
    assert f"{PAUSE_COMMIT_ENV} is set" in server.log_path.read_text()
    outcome: list[object] = []

    def send() -> None:
        try:
            with server.client() as c:
                outcome.append(c.post("/v1/repos/r/commits", json=body))
        except httpx.HTTPError as error:
            outcome.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_until(marker.exists, 60, "the commit to reach its pause point")
    finally:
        server.kill()
        sender.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError), outcome

    monkeypatch.delenv(PAUSE_COMMIT_ENV)
    server.start()
    assert server.tree("r") == before
    with server.client() as c:
        assert c.get("/v1/repos/r").json()["head"] == "1"
        assert c.get("/v1/repos/r/changes", params={"since": "1"}).json()["changes"] == []
        assert c.get(file_url("r", "d/0/0")).status_code == 404
        assert c.get("/v1/repos/r/tree", params={"path": "d"}).status_code == 404
    blobs_are_whole(server.data_dir)

    with server.client() as c:
        retry = c.post("/v1/repos/r/commits", json=body)
        assert retry.status_code == 201, retry.text
        assert retry.json()["head"] == "2"
        changes = c.get("/v1/repos/r/changes", params={"since": "1"}).json()
        assert changes["head"] == "2"
        assert c.get(file_url("r", "d/49/4999")).content == blob
        assert c.get(file_url("r", "moved")).content == b"keep"
        assert c.get(file_url("r", "gone")).status_code == 404
        assert c.get(file_url("r", "keep")).status_code == 404
        assert c.get(file_url("r", "before")).content == b"after"
        assert c.get(file_url("r", "inline")).content == b"new"
        listing = c.get("/v1/repos/r/tree", params={"recursive": "1", "limit": "10000"}).json()
    files = [e for e in listing["entries"] if e["type"] == "file"]
    assert len(files) == 5000 + 3  # d/*, before, inline, moved
    blobs_are_whole(server.data_dir)


def test_the_pause_point_is_off_unless_set_to_an_absolute_path() -> None:
    assert pause_marker_for_test({}) is None
    assert pause_marker_for_test({PAUSE_COMMIT_ENV: ""}) is None
    assert pause_marker_for_test({PAUSE_COMMIT_ENV: "/x/paused"}) == Path("/x/paused")
    with pytest.raises(ValueError, match="absolute"):
        pause_marker_for_test({PAUSE_COMMIT_ENV: "paused"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
