"""A Terminal Use filesystem synced up from a tar.zst through the server's face, as
the SDK does it: upload URL, PUT of the archive, sync-complete."""

from __future__ import annotations

import hashlib

import httpx


def sync_up(c: httpx.Client, archive: bytes, *, timeout: float = 60) -> tuple[str, httpx.Response]:
    """A new filesystem synced up from `archive`: its id, and sync-complete's answer."""
    fs_id = c.post("/terminaluse/filesystems", json={"project_id": "p"}).json()["id"]
    url = c.post(f"/terminaluse/filesystems/{fs_id}/upload-url").json()["url"]
    assert httpx.put(url, content=archive).status_code == 200
    body = {
        "sync_id": "s1",
        "direction": "UP",
        "status": "SUCCESS",
        "archive_checksum": hashlib.sha256(archive).hexdigest(),
    }
    done = c.post(f"/terminaluse/filesystems/{fs_id}/sync-complete", json=body, timeout=timeout)
    return fs_id, done
