"""Small contents (<= SMALL_BLOB_MAX) stored as rows of the server's database
(server/smallblobs.py): where they land, that every reader gets them byte-exact, what
they cost in syncs, and that a data directory from before them is upgraded in place."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.types import ASGIApp

from repomount.server.app import create_app
from repomount.server.backend import Backend, ServerOptions
from repomount.server.inline import store_contents
from repomount.server.smallblobs import SMALL_BLOB_MAX, MemorySpool
from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import ABSENT, Conflict, Write
from support.blobkinds import blob_file, blob_row, files_only
from support.blobsyncs import BlobSyncs
from support.server import ServerProc, file_url
from support.util import sha

SMALL = b"small content\n" * 73  # about 1 KiB
LARGE = bytes(range(256)) * (SMALL_BLOB_MAX // 256 + 1)  # just over the limit


class Transactions:
    """The store's write transactions (each one WAL sync under synchronous=FULL)."""

    def __init__(self, store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = store._write

        def write():  # type: ignore[no-untyped-def]
            self.count += 1
            return real()

        monkeypatch.setattr(store, "_write", write)


def files_in(store: SqliteStore) -> list[Path]:
    return list(store.blobs.blobs.glob("*/*"))


def test_small_contents_are_rows_costing_one_transaction_and_no_sync(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs, transactions = BlobSyncs(monkeypatch), Transactions(store, monkeypatch)
    data = [b"content %d" % i for i in range(300)] + [b"", b"x" * SMALL_BLOB_MAX]
    assert store_contents(store, data) == [sha(d) for d in data]
    assert (syncs.count, transactions.count) == (0, 1)
    assert files_in(store) == []
    for content in data:
        assert blob_row(store.blobs.root, sha(content)) == content
    # A large content next to small ones: a file (its syncs), the others rows.
    assert store_contents(store, [LARGE, b"one more"]) == [sha(LARGE), sha(b"one more")]
    assert files_in(store) == [store.blobs.path(sha(LARGE))]
    assert blob_row(store.blobs.root, sha(b"one more")) == b"one more"
    assert syncs.count >= 2 and transactions.count == 2


def test_a_small_save_costs_no_blob_sync_where_a_file_cost_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync count of one 1 KiB save, each kind: uploaded, then committed; or sent
    with the commit (a native commit's inline content)."""
    counts = {}
    for kind in ("rows", "files", "with the commit"):
        with monkeypatch.context() as m:
            if kind == "files":
                files_only(m)
            syncs = BlobSyncs(m)
            store = SqliteStore(tmp_path / kind)
            try:
                store.create_repo("r")
                transactions = Transactions(store, m)
                if kind == "with the commit":
                    store.commit("r", [Write("e1.txt", sha(SMALL))], contents={sha(SMALL): SMALL})
                else:
                    (blob,) = store_contents(store, [SMALL])
                    store.commit("r", [Write("e1.txt", blob)])
                counts[kind] = (syncs.count, transactions.count)
                assert store.open_blob(sha(SMALL)).read() == SMALL
            finally:
                store.close()
    assert counts["with the commit"] == (0, 1)  # the content's row in the commit's
    assert counts["rows"] == (0, 2)  # the blob's transaction, the commit's
    # an fsync of the file, of its shard directory (and of blobs/ for a new shard)
    assert counts["files"][0] >= 2 and counts["files"][1] == 1


def test_spools_of_every_kind_become_rows(store: SqliteStore) -> None:
    """A spool file of unknown size (a face's upload), a memory spool, and a memory spool
    that outgrew the size it was made for (which becomes a file)."""
    unknown = store.new_spool()
    unknown.write(b"unknown size")
    memory = store.new_spool(5)
    assert isinstance(memory, MemorySpool)
    memory.write(b"known")
    grown = store.new_spool(10)
    grown.write(LARGE)
    assert store.add_blobs([unknown, memory, grown]) == [True, True, True]
    assert blob_row(store.blobs.root, sha(b"unknown size")) == b"unknown size"
    assert blob_row(store.blobs.root, sha(b"known")) == b"known"
    assert store.blobs.path(sha(LARGE)).read_bytes() == LARGE
    assert blob_row(store.blobs.root, sha(LARGE)) is None
    again = store.new_spool(5)
    again.write(b"known")
    assert store.add_blobs([again]) == [False]


def test_has_blob_sizes_and_reads_for_both_kinds(store: SqliteStore) -> None:
    (small, large) = store_contents(store, [SMALL, LARGE])
    assert store.has_blob(small) and store.has_blob(large)
    assert not store.has_blob(sha(b"never stored")) and not store.has_blob("not a hash")
    result = store.commit("r", [Write("s", small), Write("l", large)])
    assert [r.version for r in result.results] == [small, large]
    _, entries = store.stat_many("r", ["s", "l"])
    assert [e.size for e in entries if e] == [len(SMALL), len(LARGE)]
    for blob, content in ((small, SMALL), (large, LARGE)):
        with store.open_blob(blob) as f:
            assert f.read() == content


def make_old_data_dir(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data directory as the version before rows wrote it: every blob a file, no
    small_blobs table, and no auto_vacuum (the differences in its database)."""
    with monkeypatch.context() as m:
        files_only(m)
        store = SqliteStore(data_dir)
        try:
            store.create_repo("r")
            blob_small, blob_large = store_contents(store, [SMALL, LARGE])
            store.commit("r", [Write("old.txt", blob_small), Write("big.bin", blob_large)])
        finally:
            store.close()
    db = sqlite3.connect(data_dir / "meta.sqlite3", isolation_level=None)
    db.execute("DROP TABLE small_blobs")
    db.execute("PRAGMA auto_vacuum=NONE")
    db.execute("VACUUM")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    db.close()


def test_a_data_dir_from_before_is_upgraded_and_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "server-data"
    make_old_data_dir(data_dir, monkeypatch)
    server = ServerProc(data_dir)
    server.start()
    try:
        assert server.tree("r") == {"old.txt": SMALL, "big.bin": LARGE}
        with server.client() as c:
            # The same small content again: the old file is found (200), no row is made.
            r = c.put(f"/v1/repos/r/blobs/{sha(SMALL)}", content=SMALL)
            assert r.status_code == 200
            assert c.put(file_url("r", "new.txt"), content=b"new").status_code == 201
        assert blob_row(data_dir, sha(SMALL)) is None
        assert blob_file(data_dir, sha(SMALL)).read_bytes() == SMALL
        assert blob_row(data_dir, sha(b"new")) == b"new"
        assert not blob_file(data_dir, sha(b"new")).exists()
        assert server.tree("r") == {"old.txt": SMALL, "big.bin": LARGE, "new.txt": b"new"}
    finally:
        server.stop()
    db = sqlite3.connect(data_dir / "meta.sqlite3")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    auto_vacuum = db.execute("PRAGMA auto_vacuum").fetchone()[0]
    db.close()
    assert "small_blobs" in tables and auto_vacuum == 2  # incremental: the GC frees disk


def test_every_reader_gets_small_contents_byte_exact(
    live: ServerProc, client: httpx.Client, repo: str
) -> None:
    binary = bytes(range(256)) * 3 + b"\0\r\n"
    r = client.put(file_url(repo, "put.bin"), content=binary)
    assert r.status_code == 201
    ops = [{"op": "write", "path": "inline.txt", "content_b64": base64.b64encode(SMALL).decode()}]
    assert client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).status_code == 201
    for content in (binary, SMALL):
        assert blob_row(live.data_dir, sha(content)) == content
        assert not blob_file(live.data_dir, sha(content)).exists()
    # native GET, ranged GET, POST /read (a tar), and a face (Oxen's file download)
    assert client.get(file_url(repo, "put.bin")).content == binary
    ranged = client.get(file_url(repo, "inline.txt"), headers={"Range": "bytes=3-9"})
    assert (ranged.status_code, ranged.content) == (206, SMALL[3:10])
    r = client.post(f"/v1/repos/{repo}/read", json={"paths": ["put.bin", "inline.txt"]})
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        got = {
            m.name: tar.extractfile(m).read() for m in tar if m.name in ("put.bin", "inline.txt")
        }  # type: ignore[union-attr]
    assert got == {"put.bin": binary, "inline.txt": SMALL}
    oxen = httpx.get(
        f"{live.url}/api/repos/repomount/{repo}/file/main/inline.txt",
        headers={"Authorization": f"Bearer {live.token}"},
    )
    assert (oxen.status_code, oxen.content) == (200, SMALL)


def test_contents_of_a_refused_commit_are_not_kept(store: SqliteStore) -> None:
    """They go with the commit's transaction: nothing names them, nothing stays."""
    store.commit("r", [Write("f", sha(b"first"))], contents={sha(b"first"): b"first"})
    with pytest.raises(Conflict):
        store.commit(
            "r", [Write("f", sha(b"second"), expect=ABSENT)], contents={sha(b"second"): b"second"}
        )
    assert blob_row(store.blobs.root, sha(b"second")) is None
    assert blob_row(store.blobs.root, sha(b"first")) == b"first"


async def _call(app: ASGIApp, method: str, path: str, body: bytes) -> int:
    """One request through the app in this process (no HTTP server): its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    messages: list[dict[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    await app(scope, receive, send)
    return int(answer[0]["status"])


async def test_a_small_save_is_one_transaction_in_one_thread_hop(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor's save of 1 KiB (PUT /files, or a commit with the content inline): the
    content's row goes in the commit's transaction (one WAL sync, not two), and the
    request makes one trip to a worker thread (about 0.15 ms each on a small VM), not
    two or three. A large PUT is looked up first and stored before its commit."""
    backend = Backend(store, ServerOptions())
    app = create_app(backend, log_requests=False)
    transactions, syncs = Transactions(store, monkeypatch), BlobSyncs(monkeypatch)
    hops = 0
    real_run = backend.run

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_run(fn, *args, **kwargs)

    monkeypatch.setattr(backend, "run", run)
    assert await _call(app, "PUT", "/v1/repos/r/files/e1.txt", SMALL) == 201
    assert (transactions.count, hops, syncs.count) == (1, 1, 0)
    assert store.open_blob(sha(SMALL)).read() == SMALL
    assert store.stat("r", "e1.txt")[1] is not None

    # The same save as a native commit with its content inline (what a mount sends).
    transactions.count = hops = 0
    again = SMALL + b"again"
    op = {"op": "write", "path": "e1.txt", "content_b64": base64.b64encode(again).decode()}
    body = json.dumps({"operations": [op]}).encode()
    assert await _call(app, "POST", "/v1/repos/r/commits", body) == 201
    assert (transactions.count, hops, syncs.count) == (1, 1, 0)
    assert store.open_blob(sha(again)).read() == again
    assert await _call(app, "POST", "/v1/repos/nope/commits", body) == 404

    # An unknown repository: 404 from the commit, and its content is not kept.
    assert await _call(app, "PUT", "/v1/repos/nope/files/e1.txt", b"orphan") == 404
    assert blob_row(store.blobs.root, sha(b"orphan")) is None

    # A large content: the repository looked up before its body is read, then stored.
    transactions.count = hops = 0
    assert await _call(app, "PUT", "/v1/repos/r/files/big.bin", LARGE) == 201
    assert hops == 3 and transactions.count == 1  # (the head is read, not written)
    assert store.open_blob(sha(LARGE)).read() == LARGE
