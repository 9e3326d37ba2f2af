"""Server security probe, finding 7: server resources a client could use up.

- Relace `clone` read every file whole into memory (three clones of one 200 MiB file
  took 1 GiB): it is streamed, one chunk of one file at a time. So is a Terminal Use
  listing, which inlines up to 5,000 contents of up to 1 MiB each.
- An inline batch held one open spool file per file: three concurrent 700-file
  batches ran out of a 1,024-descriptor limit and two got 500. Spools are filled and
  closed one at a time.
- Connections that carried a streamed GET were never closed (50 of 50 still open
  after 8 s idle): every idle keep-alive connection is closed after 5 s.
"""

from __future__ import annotations

import json
import resource
import threading
from collections.abc import Iterator

import httpx

from support.server import ServerProc
from support.util import wait_until

MiB = 1 << 20
PEAK_GROWTH_LIMIT_KIB = 40 * 1024
KEEP_ALIVE_TIMEOUT = 5.0  # run.py


def _text(total: int) -> Iterator[bytes]:
    line = b'0123456789 "quoted" \\ tab\t\n' * 4096  # JSON escapes on every line
    sent = 0
    while sent < total:
        part = line[: total - sent]
        sent += len(part)
        yield part


def test_a_clone_streams_a_large_file(server: ServerProc) -> None:
    server.create_repo("big")
    size = 64 * MiB
    with server.client() as c:
        c.put("/v1/repos/big/files/big.txt", content=_text(size)).raise_for_status()
        before = server.rss_peak_kib()
        received = 0
        with c.stream("GET", "/relace/v1/repo/big/clone") as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += len(chunk)
    assert received > size  # the content, with its escapes
    assert server.rss_peak_kib() - before < PEAK_GROWTH_LIMIT_KIB


def test_a_clone_is_the_text_files_as_json(server: ServerProc) -> None:
    server.create_repo("small")
    files = {
        "a.txt": "plain",
        "dir/b.md": 'quotes " and \\ and \n and \u2028 and é and 𝄞',
        "empty": "",
    }
    for path, text in files.items():
        server.put("small", path, text.encode())
    server.put("small", "binary.bin", b"\xff\xfe not UTF-8")
    server.put("small", "split", b"a" * 300_000 + b"\xff")  # invalid only far along
    long_text = "ü" * 400_000  # several chunks, characters split across them
    server.put("small", "long.txt", long_text.encode())
    with server.client() as c:
        r = c.get("/relace/v1/repo/small/clone")
    assert r.status_code == 200
    got = {f["filename"]: f["content"] for f in json.loads(r.content)["files"]}
    assert got == {**files, "long.txt": long_text}


def test_a_terminal_use_listing_streams_its_inlined_contents(server: ServerProc) -> None:
    server.create_repo("fs")
    text = b"t" * MiB  # inlined whole: 1 MiB is the face's limit per file
    with server.client() as c:
        for i in range(64):
            c.put(f"/v1/repos/fs/files/f{i:02}.txt", content=text).raise_for_status()
        before = server.rss_peak_kib()
        with c.stream("GET", "/terminaluse/filesystems/fs/files", params={"limit": 100}) as r:
            assert r.status_code == 200
            body = r.read()
    assert server.rss_peak_kib() - before < PEAK_GROWTH_LIMIT_KIB
    listing = json.loads(body)
    assert listing["total_count"] == 64 and listing["filesystem_id"] == "fs"
    assert [f["path"] for f in listing["files"]] == [f"f{i:02}.txt" for i in range(64)]
    assert all(f["content"] == text.decode() for f in listing["files"])


def _relace_batch(server: ServerProc, repo: str, tag: str, results: list[int]) -> None:
    files = [{"filename": f"{tag}/{i}.txt", "content": f"{tag} {i}"} for i in range(700)]
    with server.client() as c:
        r = c.post(
            f"/relace/v1/repo/{repo}/update", json={"source": {"type": "files", "files": files}}
        )
        results.append(r.status_code)


def test_inline_batches_hold_one_spool_at_a_time(server: ServerProc) -> None:
    assert server.proc is not None
    limit = 256  # descriptors for the whole server: far fewer than one batch's files
    resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    results: list[int] = []
    threads = []
    for n in range(3):
        repo = f"batch{n}"
        server.create_repo(repo)
        threads.append(threading.Thread(target=_relace_batch, args=(server, repo, "t", results)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [200, 200, 200]
    ops = [{"op": "write", "path": f"n/{i}", "content_b64": ""} for i in range(700)]
    with server.client() as c:
        assert c.post("/v1/repos/batch0/commits", json={"operations": ops}).status_code == 201
    assert "Traceback" not in server.log_path.read_text(errors="replace")


def test_idle_connections_are_closed_after_streamed_answers(server: ServerProc) -> None:
    server.create_repo("ka")
    server.put("ka", "a.txt", b"a" * MiB)
    urls = [
        ("GET", "/v1/repos/ka/files/a.txt", None),
        ("POST", "/v1/repos/ka/read", {"paths": ["a.txt"]}),
        ("GET", "/relace/v1/repo/ka/file/a.txt", None),
        ("GET", "/relace/v1/repo/ka/clone", None),
        ("GET", "/terminaluse/filesystems/ka/file-download?path=a.txt", None),
        ("GET", "/v1/repos", None),
    ]
    clients = [server.client() for _ in range(4) for _ in urls]
    try:
        for client, (method, url, body) in zip(clients, urls * 4, strict=True):
            assert client.request(method, url, json=body).status_code == 200
        assert len(server.connections()) == len(clients)  # kept alive for now
        wait_until(
            lambda: not server.connections(),
            KEEP_ALIVE_TIMEOUT + 10,
            "the server to close idle connections",
        )
    finally:
        for client in clients:
            client.close()


def test_a_busy_connection_is_not_closed_as_idle(server: ServerProc) -> None:
    server.create_repo("busy")
    with server.client() as c:
        c.timeout = httpx.Timeout(KEEP_ALIVE_TIMEOUT * 3)
        r = c.get("/v1/repos/busy/changes", params={"since": "0", "wait": KEEP_ALIVE_TIMEOUT + 1})
        assert r.status_code == 200  # a long-poll outlasts the idle timeout
