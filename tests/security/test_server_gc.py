"""Issue 18, finding 8: the server never freed disk (no blob garbage collection).

Replays the finding against a real `repomount serve`: deleted files, orphan uploads and
deleted repositories now give their disk back, through `repomount serve --gc-now` and
through the server's own periodic collection, while a blob some kept version names, or
one uploaded within the grace period, stays, and commits racing the collector never
end up naming a missing blob.

A blob's age is its file's or its row's mtime: tests age one by setting it back, not by
waiting. Contents up to 64 KiB are rows of the database (server/smallblobs.py), larger
ones files: the tests use both.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from server.test_blob_packs import pack
from support.blobkinds import set_upload_time, stored_content
from support.server import ServerFactory, ServerProc, file_url
from support.util import sha, wait_until

FREED_RE = re.compile(r"gc: freed (\d+) blobs \((\d+) bytes\); kept (\d+) blobs")
FILE_SIZE = 64 << 10
SLACK = 512 << 10  # the database keeps its free pages (reused, never given back)


def disk_use(root: Path) -> int:
    """Bytes the files under `root` take on disk."""
    return sum(
        os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(root) for f in files
    )


def is_stored(server: ServerProc, data: bytes) -> bool:
    return stored_content(server.data_dir, sha(data)) == data


def age(server: ServerProc, data: bytes, seconds: float = 2 * 3600) -> None:
    set_upload_time(server.data_dir, sha(data), time.time() - seconds)


def run_gc_now(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["serve", "--data", str(data_dir), "--gc-now", *args]
    return subprocess.run(
        [sys.executable, "-m", "repomount", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def gc_now(server: ServerProc, *args: str) -> tuple[int, int, int]:
    """`repomount serve --gc-now` over the (stopped) server's data: (freed, bytes, kept)."""
    done = run_gc_now(server.data_dir, *args)
    assert done.returncode == 0, done.stderr
    match = FREED_RE.search(done.stdout)
    assert match, done.stdout
    return int(match[1]), int(match[2]), int(match[3])


def commit(c: httpx.Client, repo: str, operations: list[dict[str, str]]) -> httpx.Response:
    return c.post(f"/v1/repos/{repo}/commits", json={"operations": operations})


def test_deleting_100_files_gives_their_disk_back(server_factory: ServerFactory) -> None:
    """The issue's "Show": write 100 files, delete them, collect: disk use falls back."""
    server = server_factory(["--history", "1", "--gc-interval", "0"])
    server.create_repo("r")
    server.put("r", "marker", b"before")
    start = disk_use(server.data_dir)
    files = {f"dir/f{n:03}": os.urandom(FILE_SIZE) for n in range(100)}
    for path, data in files.items():
        server.put("r", path, data)
    assert disk_use(server.data_dir) >= start + 100 * FILE_SIZE
    with server.client() as c:
        deletes = [{"op": "delete", "path": p} for p in files]
        commit(c, "r", deletes).raise_for_status()
    server.put("r", "marker", b"after")  # --history 1: the deleted versions leave history
    server.stop()

    freed, freed_bytes, _ = gc_now(server, "--gc-grace", "0")

    assert (freed, freed_bytes) == (100, 100 * FILE_SIZE)  # "before" is still kept history
    assert disk_use(server.data_dir) <= start + SLACK
    server.start()
    assert server.tree("r") == {"marker": b"after"}


def test_the_server_collects_old_orphan_uploads_on_its_own(server_factory: ServerFactory) -> None:
    """With the default grace (1 h): an upload nobody committed goes once older than
    that, a younger one stays and can still be committed."""
    server = server_factory(["--gc-interval", "0.1"])
    server.create_repo("r")
    old, young = b"uploaded long ago, never committed", b"uploaded just now"
    with server.client() as c:
        for data in (old, young):
            c.put(f"/v1/repos/r/blobs/{sha(data)}", content=data).raise_for_status()
        age(server, old)

        wait_until(lambda: not is_stored(server, old), 15, "the old upload to go")
        wait_until(lambda: FREED_RE.search(server.log_path.read_text()), 15, "the gc's log line")
        assert is_stored(server, young)
        assert commit(c, "r", [{"op": "write", "path": "y", "blob": sha(young)}]).status_code == 201
        refused = commit(c, "r", [{"op": "write", "path": "o", "blob": sha(old)}])
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "unknown_blob"
    assert server.tree("r") == {"y": young}


def test_an_upload_found_present_is_kept_for_the_grace(server_factory: ServerFactory) -> None:
    """An old orphan uploaded again (PUT, or a pack member found present) counts as new:
    the client was told it is stored, and its commit is on the way."""
    server = server_factory(["--gc-interval", "0"])
    server.create_repo("r")
    again, packed, neither = b"sent again", b"sent again in a pack", b"not sent again"
    with server.client() as c:
        for data in (again, packed, neither):
            c.put(f"/v1/repos/r/blobs/{sha(data)}", content=data).raise_for_status()
    for data in (again, packed, neither):
        age(server, data)
    with server.client() as c:
        assert c.put(f"/v1/repos/r/blobs/{sha(again)}", content=again).status_code == 200
        r = c.post(
            "/v1/repos/r/blobs",
            content=pack([(sha(packed), packed)]),
            headers={"Content-Type": "application/x-tar"},
        )
        assert r.json() == {"stored": 0, "present": 1}
    server.stop()

    assert gc_now(server)[0] == 1  # the default grace, 1 h
    assert is_stored(server, again) and is_stored(server, packed)
    assert not is_stored(server, neither)


def test_a_deleted_repos_data_is_freed(server_factory: ServerFactory) -> None:
    server = server_factory(["--gc-interval", "0"])
    shared = b"in both repositories"
    server.create_repo("keep")
    server.put("keep", "shared", shared)
    start = disk_use(server.data_dir)
    server.create_repo("gone")
    for n in range(20):
        server.put("gone", f"f{n}", os.urandom(FILE_SIZE))
    server.put("gone", "shared", shared)
    with server.client() as c:
        c.delete("/v1/repos/gone").raise_for_status()
    server.stop()

    freed, freed_bytes, kept = gc_now(server, "--gc-grace", "0")

    assert (freed, freed_bytes, kept) == (20, 20 * FILE_SIZE, 1)
    assert disk_use(server.data_dir) <= start + SLACK
    server.start()
    assert server.tree("keep") == {"shared": shared}


def test_gc_now_refuses_a_data_dir_in_use(server: ServerProc, tmp_path: Path) -> None:
    for data_dir, says in [
        (server.data_dir, "in use by another repomount server"),
        (tmp_path / "nothing", "not a repomount server's data directory"),
    ]:
        done = run_gc_now(data_dir)
        assert done.returncode == 1
        assert done.stderr.startswith("repomount serve: error:") and says in done.stderr
        assert done.stderr.count("\n") == 1
    assert not (tmp_path / "nothing").exists()


def test_commits_racing_the_collector_never_name_a_missing_blob(
    server_factory: ServerFactory,
) -> None:
    """The collector runs back to back with no grace at all while clients write (PUT of
    a file; upload then commit; inline content): each write lands with its content, or
    is refused whole with 422 unknown_blob; every file is readable after."""
    server = server_factory(["--history", "1", "--gc-interval", "0.02", "--gc-grace", "0"])
    server.create_repo("r")
    landed: dict[str, bytes] = {}
    statuses: list[int] = []
    lock = threading.Lock()

    def writer(who: int) -> None:
        with server.client() as c:
            for n in range(45):
                path, data = f"w{who}/f{n % 4}", f"writer {who} round {n} ".encode() * 50
                if n % 3 == 0:
                    r = c.put(file_url("r", path), content=data)
                elif n % 3 == 1:
                    c.put(f"/v1/repos/r/blobs/{sha(data)}", content=data).raise_for_status()
                    r = commit(c, "r", [{"op": "write", "path": path, "blob": sha(data)}])
                else:
                    b64 = base64.b64encode(data).decode()
                    r = commit(c, "r", [{"op": "write", "path": path, "content_b64": b64}])
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code in (200, 201):
                        landed[path] = data
                    else:
                        assert r.status_code == 422, r.text
                        assert r.json()["error"]["code"] == "unknown_blob"

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert len(statuses) == 3 * 45
    assert server.tree("r") == landed  # (raises if a listed file cannot be read)
    assert FREED_RE.search(server.log_path.read_text())  # the collector did free meanwhile
    assert all(line.status < 500 for line in server.requests())
