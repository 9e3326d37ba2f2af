"""A small client of the server's native API (docs/native-api.md), for seeding repos
through batch commits, checking what the server holds, and the reference transfers."""

from __future__ import annotations

import base64
import hashlib
import io
import statistics
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

INLINE_MAX = 1 << 20  # larger contents go up as blobs first
COMMIT_JSON_MAX = 24 << 20
COMMIT_OPS_MAX = 20_000
# The server holds a spool file open per inline content of a commit, all at once: a commit
# with more of them than its descriptor limit (often 1,024) fails with 500 (EMFILE). So
# inline contents are capped per commit.
COMMIT_INLINE_MAX = 500


@dataclass
class Item:
    """One file to seed: its path in the repo and its content (bytes, or a local file)."""

    path: str
    data: bytes | None = None
    local: Path | None = None

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.local is not None
        return self.local.read_bytes()


def file_url(repo: str, path: str) -> str:
    return f"/v1/repos/{repo}/files/{quote(path, safe='/')}"


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )

    def close(self) -> None:
        self.client.close()

    def create_repo(self, name: str) -> None:
        self.client.post("/v1/repos", json={"name": name}).raise_for_status()

    def commit(self, repo: str, ops: list[dict[str, object]]) -> None:
        r = self.client.post(f"/v1/repos/{repo}/commits", json={"operations": ops})
        if r.status_code != 201:
            raise RuntimeError(f"commit of {len(ops)} operations: {r.status_code} {r.text[:500]}")

    def put_blob(self, repo: str, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.client.put(f"/v1/repos/{repo}/blobs/{sha}", content=data).raise_for_status()
        return sha

    def seed(self, repo: str, items: Iterable[Item]) -> int:
        """Write every item in batch commits, each distinct content sent once. Returns
        the number of commits."""
        known: set[str] = set()
        ops: list[dict[str, object]] = []
        size = 0
        inline = 0
        commits = 0
        for item in items:
            data = item.content()
            sha = hashlib.sha256(data).hexdigest()
            op: dict[str, object] = {"op": "write", "path": item.path}
            if sha in known:
                op["blob"] = sha
            elif len(data) > INLINE_MAX:
                self.put_blob(repo, data)
                op["blob"] = sha
            else:
                op["content_b64"] = base64.b64encode(data).decode()
                size += len(data) * 4 // 3
                inline += 1
            known.add(sha)
            ops.append(op)
            size += 100 + len(item.path)
            if size > COMMIT_JSON_MAX or len(ops) >= COMMIT_OPS_MAX or inline >= COMMIT_INLINE_MAX:
                self.commit(repo, ops)
                commits += 1
                ops, size, inline = [], 0, 0
        if ops:
            self.commit(repo, ops)
            commits += 1
        return commits

    def tree(self, repo: str, path: str = "") -> dict[str, dict[str, object]]:
        """Every entry below `path` (recursive), by path."""
        entries: dict[str, dict[str, object]] = {}
        params = {"recursive": "1", "limit": "10000", "path": path}
        while True:
            r = self.client.get(f"/v1/repos/{repo}/tree", params=params)
            r.raise_for_status()
            body = r.json()
            entries.update((e["path"], e) for e in body["entries"])
            if body["next_cursor"] is None:
                return entries
            params["cursor"] = body["next_cursor"]

    def read_many(self, repo: str, paths: list[str]) -> Iterator[tuple[str, bytes]]:
        """Contents through the bulk read (a tar stream), 5,000 paths a request."""
        for i in range(0, len(paths), 5000):
            r = self.client.post(f"/v1/repos/{repo}/read", json={"paths": paths[i : i + 5000]})
            r.raise_for_status()
            with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
                for member in tar:
                    f = tar.extractfile(member)
                    if f is not None and member.name != "MISSING":
                        yield member.name, f.read()

    def head(self, repo: str, path: str) -> tuple[int, str] | None:
        """(size, version) of a file, None when absent."""
        r = self.client.head(file_url(repo, path))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return int(r.headers["content-length"]), r.headers["etag"].strip('"')

    def get(self, repo: str, path: str) -> bytes:
        r = self.client.get(file_url(repo, path))
        r.raise_for_status()
        return r.content


def check_tree(api: Api, repo: str, prefix: str, files: list[tuple[str, int, str]]) -> str:
    """'ok' when the server holds every file under `prefix` with the right content."""
    entries = api.tree(repo, prefix)
    wrong = [p for p, size, _ in files if entries.get(f"{prefix}/{p}", {}).get("size") != size]
    if wrong:
        return f"missing-or-wrong-size={len(wrong)}"
    want = {f"{prefix}/{p}": sha for p, _, sha in files}
    bad = sum(hashlib.sha256(d).hexdigest() != want[p] for p, d in api.read_many(repo, list(want)))
    return "sha256-ok" if not bad else f"sha256-mismatch={bad}"


def probe_rtt(url: str, token: str, rounds: int = 20) -> dict[str, float]:
    """Median time of a trivial GET /v1/repos: on one kept-alive connection, and each on a
    new connection (which adds the TCP handshake)."""
    headers = {"Authorization": f"Bearer {token}"}
    kept: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        c.get("/v1/repos").raise_for_status()
        for _ in range(rounds):
            t = time.perf_counter()
            c.get("/v1/repos").raise_for_status()
            kept.append(time.perf_counter() - t)
    fresh: list[float] = []
    for _ in range(max(3, rounds // 4)):
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            t = time.perf_counter()
            c.get("/v1/repos").raise_for_status()
            fresh.append(time.perf_counter() - t)
    return {
        "get_ms": 1000 * statistics.median(kept),
        "get_new_conn_ms": 1000 * statistics.median(fresh),
    }


def put_latency(url: str, token: str, repo: str, rounds: int = 30) -> dict[str, float]:
    """A bare HTTP PUT of 1 KiB (kept-alive connection): E1's reference."""
    times: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        for i in range(rounds + 1):
            t = time.perf_counter()
            c.put(
                file_url(repo, "e1-ref.txt"), content=bytes([65 + i % 26]) * 1024
            ).raise_for_status()
            if i:
                times.append(time.perf_counter() - t)
    return {"median_ms": 1000 * statistics.median(times)}
