"""Blob uploads and the bulk read (tar stream)."""

from __future__ import annotations

import io
import json
import tarfile

import httpx

from support.blobkinds import stored_content
from support.server import ServerProc
from support.util import sha


def test_blob_upload(live: ServerProc, client: httpx.Client, repo: str) -> None:
    data = b"blob content" * 1000
    url = f"/v1/repos/{repo}/blobs/{sha(data)}"
    r = client.put(url, content=data)
    assert r.status_code == 201
    assert r.json() == {"sha256": sha(data), "size": len(data)}
    assert r.headers["X-Repo-Head"] == "0"
    assert client.put(url, content=data).status_code == 200  # already present

    r = client.put(f"/v1/repos/{repo}/blobs/{sha(b'other')}", content=data)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["expected"], error["actual"]) == (
        "hash_mismatch",
        sha(b"other"),
        sha(data),
    )
    assert client.put(f"/v1/repos/{repo}/blobs/ABC", content=b"").status_code == 422
    assert client.put(f"/v1/repos/{repo}/blobs/{'A' * 64}", content=b"").status_code == 422
    # Nothing half-written is left behind, and a mismatched body is not stored.
    assert list((live.data_dir / "tmp").iterdir()) == []
    assert stored_content(live.data_dir, sha(b"other")) is None
    assert stored_content(live.data_dir, sha(data)) == data


def untar(data: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    members = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            f = tar.extractfile(m)
            assert f is not None
            members.append((m.name, f.read(), dict(m.pax_headers)))
    return members


def test_bulk_read(live: ServerProc, client: httpx.Client, repo: str) -> None:
    long_name = "deep/" + "n" * 200 + "/ünï.txt"
    files = {"a.txt": b"A", long_name: b"L" * 5000, "e": b""}
    for path, data in files.items():
        live.put(repo, path, data)
    live.put(repo, "a.txt", b"A2")  # head 4
    paths = [long_name, "missing", "a.txt", "deep", "e"]
    r = client.post(f"/v1/repos/{repo}/read", json={"paths": paths})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/x-tar"
    assert r.headers["X-Repo-Head"] == "4"
    members = untar(r.content)
    assert [(name, data) for name, data, _ in members[:-1]] == [
        (long_name, b"L" * 5000),
        ("a.txt", b"A2"),
        ("e", b""),
    ]
    assert members[0][2]["repomount.version"] == sha(b"L" * 5000)
    name, data, pax = members[-1]
    assert name == "MISSING"
    assert "repomount.version" not in pax
    assert json.loads(data) == ["missing", "deep"]

    r = client.post(f"/v1/repos/{repo}/read", json={"paths": ["a.txt"], "at": "1"})
    assert r.headers["X-Repo-Head"] == "1"
    assert untar(r.content)[0][:2] == ("a.txt", b"A")


def test_bulk_read_errors(client: httpx.Client, repo: str) -> None:
    url = f"/v1/repos/{repo}/read"
    assert client.post(url, content=b"nope").status_code == 400
    assert client.post(url, json={"paths": "a"}).status_code == 422
    assert client.post(url, json={"paths": [1]}).status_code == 422
    r = client.post(url, json={"paths": ["ok", "../up"]})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_path")
    assert client.post(url, json={"paths": [], "at": "7"}).status_code == 404
