"""Contract: each declared capability works, and each undeclared one behaves as documented.

A capability declared but not working fails here; an operation whose capability is not
declared must be refused with Unsupported (not retryable) and change nothing on the
server, or, where the adapter documents another behaviour (a range served from the
whole file, an ignored mode, a local-only mkdir), behave exactly so. Delete and rename
are checked in test_changes.py, on every adapter, the same way.
"""

from __future__ import annotations

import io
from dataclasses import replace

import httpx
import pytest
import trio

from contract.conftest import Face, Store, WriteFactory, assert_refused, mutating
from repomount.remotes.base import (
    Aborted,
    Applied,
    ChangeBatch,
    Conflicted,
    Entry,
    Expect,
    Failed,
    Mkdir,
    Remote,
    RemoteChange,
    Symlink,
    Unsupported,
)
from support.tap import Tap


async def walk(remote: Remote, path: str) -> list[Entry]:
    """Every entry below `path`, found by non-recursive listings only."""
    found: list[Entry] = []
    for entry in (await remote.list_tree(path)).entries:
        found.append(entry)
        if entry.kind == "dir":
            found += await walk(remote, entry.path)
    return sorted(found, key=lambda e: e.path)


# --------------------------------------------------------------------------- conditional_write


async def test_conditional_write_holds_between_check_and_write(
    face: Face, store: Store, write: WriteFactory
) -> None:
    """Someone else writes the file just before our write goes out. With
    conditional_write the remote checks the precondition itself: Conflicted with their
    version, and their content stays. Without it the precondition was checked by the
    adapter before, and the documented race window applies: ours lands over theirs;
    except where the adapter documents that the write itself notices a replaced file
    (`sees_replace`: Sentry's delete by id finds the id gone)."""
    base = store.put("f.txt", b"base")
    theirs_version = store.version(b"theirs")
    raced: list[httpx.Request] = []

    async def someone_else_first(request: httpx.Request) -> None:
        if mutating(request) and not raced:
            raced.append(request)
            await trio.to_thread.run_sync(store.put, "f.txt", b"theirs")

    remote = face.open(store.server, store.name, transport=Tap(before=someone_else_first))
    try:
        result = await remote.apply([write("f.txt", b"mine", expect=base)])
        conditional = remote.capabilities.conditional_write
    finally:
        await remote.aclose()
    assert raced
    if conditional or face.sees_replace:
        assert result.outcomes == [Conflicted(current=theirs_version)]
        assert store.files() == {"f.txt": b"theirs"}
    else:
        assert result.outcomes == [Applied(version=store.version(b"mine"))]
        assert store.files() == {"f.txt": b"mine"}


# --------------------------------------------------------------------------- atomic_batch


async def test_a_conflict_in_a_batch(store: Store, remote: Remote, write: WriteFactory) -> None:
    """With atomic_batch a conflicting change aborts the rest of its batch (Failed with
    Aborted, retryable) and nothing lands; without it, each change stands on its own:
    the conflict is reported and the others land."""
    stale = store.put("hot.txt", b"old")
    current = store.put("hot.txt", b"new")
    head = store.head()
    result = await remote.apply(
        [
            write("fresh.txt", b"fresh"),
            write("hot.txt", b"mine", expect=stale),
            write("other.txt", b"other", expect=Expect.ANY),
        ]
    )
    first, conflicted, last = result.outcomes
    assert conflicted == Conflicted(current=current)
    if remote.capabilities.atomic_batch:
        for outcome in (first, last):
            assert isinstance(outcome, Failed) and isinstance(outcome.error, Aborted)
            assert outcome.retryable
        assert store.head() == head
        assert store.files() == {"hot.txt": b"new"}
    else:
        assert (first, last) == (
            Applied(version=store.version(b"fresh")),
            Applied(version=store.version(b"other")),
        )
        assert store.files() == {"hot.txt": b"new", "fresh.txt": b"fresh", "other.txt": b"other"}


async def test_a_failing_change_in_a_batch(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """A change the remote refuses (a file below a file) fails, not retryable. With
    atomic_batch it is blamed alone, the others are Aborted (retryable) and nothing
    lands; without it every outcome tells the truth: what is Applied landed, and
    nothing else did."""
    store.put("f", b"a file")
    head = store.head()
    result = await remote.apply(
        [write("a.txt", b"a"), write("f/below", b"b"), write("z.txt", b"z")]
    )
    first, failing, last = result.outcomes
    assert isinstance(failing, Failed) and not failing.retryable
    if remote.capabilities.atomic_batch:
        for outcome in (first, last):
            assert isinstance(outcome, Failed) and isinstance(outcome.error, Aborted)
            assert outcome.retryable
        assert store.head() == head
        assert store.files() == {"f": b"a file"}
    else:
        expected = {"f": b"a file"}
        for path, data, outcome in (("a.txt", b"a", first), ("z.txt", b"z", last)):
            if isinstance(outcome, Applied):
                assert outcome.version == store.version(data)
                expected[path] = data
            else:
                assert isinstance(outcome, Failed)
        assert store.files() == expected


# --------------------------------------------------------------------------- empty_dirs


async def test_empty_directories(face: Face, store: Store, remote: Remote) -> None:
    """With empty_dirs a Mkdir makes a directory that lists as empty and stats as a
    directory. Without it nothing is made on the server: the Mkdir is refused with
    Unsupported, or, where documented (`local_mkdir`), accepted and sent nowhere."""
    if remote.capabilities.empty_dirs:
        result = await remote.apply([Mkdir("e/mt")])
        assert result.outcomes == [Applied(version=None)]
        assert (await remote.list_tree("e/mt")).entries == []
        entry = await remote.stat("e/mt")
        assert entry is not None and entry.kind == "dir"
        assert store.kinds() == {"e": "dir", "e/mt": "dir"}
    elif face.local_mkdir:
        head = store.head()
        result = await remote.apply([Mkdir("e/mt")])
        assert result.outcomes == [Applied(version=None)]
        assert store.kinds() == {} and store.head() == head
        assert await remote.stat("e/mt") is None
    else:
        await assert_refused(remote, store, [Mkdir("e/mt")])


# --------------------------------------------------------------------------- ranged_read


async def test_ranged_reads_move_only_the_range(face: Face, store: Store) -> None:
    """With ranged_read a 10-byte read of a 1 MiB file moves only about those bytes
    over the wire; without it the documented behaviour is a whole-file download, sliced
    by the adapter. The bytes delivered are the range either way."""
    data = bytes(range(256)) * 4096
    store.seed({"blob.bin": data})
    received = 0

    async def count(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        nonlocal received
        body = await response.aread()
        received += len(body)
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(response.status_code, headers=kept, content=body)

    remote = face.open(store.server, store.name, transport=Tap(after=count))
    try:
        dest = io.BytesIO()
        fetched = await remote.read("blob.bin", dest, offset=500_000, length=10)
        ranged = remote.capabilities.ranged_read
    finally:
        await remote.aclose()
    assert dest.getvalue() == data[500_000:500_010]
    assert (fetched.size, fetched.written) == (len(data), 10)
    if ranged:
        assert received < 64 * 1024
    else:
        assert received >= len(data)


# --------------------------------------------------------------------------- change_feed


async def test_change_feed(store: Store, remote: Remote, write: WriteFactory) -> None:
    """With change_feed: changes(None) gives the current head; changes(since) lists what
    was written after it, with versions; a long poll waits and wakes on someone else's
    commit. Without it: changes() raises Unsupported."""
    if not remote.capabilities.change_feed:
        with pytest.raises(Unsupported):
            await remote.changes(None)
        return
    start = await remote.changes(None)
    assert start.changes == []
    result = await remote.apply([write("fed.txt", b"fed")])
    batch = await remote.changes(start.head)
    # (`head`: the commit that made the change, where the feed says)
    made = [c.head for c in batch.changes]
    assert made in ([None], [result.head])
    assert batch.changes == [RemoteChange("fed.txt", "write", store.version(b"fed"), made[0])]
    assert batch.head == result.head != start.head
    assert (await remote.changes(batch.head)).changes == []

    got: list[ChangeBatch] = []

    async def poll() -> None:
        got.append(await remote.changes(batch.head, wait=30))

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.3)
            assert not got  # still waiting: nothing happened yet
            await trio.to_thread.run_sync(store.put, "late.txt", b"late")
    (woken,) = got
    late = [RemoteChange(c.path, c.op, c.version) for c in woken.changes]  # (head aside)
    assert late == [RemoteChange("late.txt", "write", store.version(b"late"))]
    assert woken.changes[0].head in (None, woken.head)


# --------------------------------------------------------------------------- binary_content


async def test_binary_content_round_trips(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """With binary_content every byte value (and content that is not UTF-8) is written,
    stored, stat'ed and read back unchanged. Without it such a write is refused."""
    data = bytes(range(256)) * 64 + b"\xff\xfe\x00\xc3"
    change = write("bin/blob.dat", data)
    if not remote.capabilities.binary_content:
        await assert_refused(remote, store, [change])
        return
    assert (await remote.apply([change])).outcomes == [Applied(version=store.version(data))]
    assert store.files() == {"bin/blob.dat": data}
    entry = await remote.stat("bin/blob.dat")
    assert entry is not None and (entry.size, entry.version) == (len(data), store.version(data))
    dest = io.BytesIO()
    assert (await remote.read("bin/blob.dat", dest)).version == store.version(data)
    assert dest.getvalue() == data


# --------------------------------------------------------------------------- recursive_listing


async def test_recursive_listing_is_the_whole_walk(store: Store, remote: Remote) -> None:
    """A recursive listing (of the root and of a subdirectory) holds exactly what
    listing every directory one level at a time finds, and says it is recursive.
    recursive_listing is declared by every adapter here; it promises the whole tree in
    one listing, which this checks for the root."""
    store.seed(
        {"README.md": b"r\n", "src/a.py": b"a\n", "src/pkg/b.py": b"b\n", "docs/x/y/z.md": b"z\n"}
    )
    whole = await remote.list_tree("", recursive=True)
    assert whole.recursive and whole.path == ""
    assert whole.entries == await walk(remote, "")
    assert [e.path for e in whole.entries] == [
        "README.md",
        "docs",
        "docs/x",
        "docs/x/y",
        "docs/x/y/z.md",
        "src",
        "src/a.py",
        "src/pkg",
        "src/pkg/b.py",
    ]
    below = await remote.list_tree("src", recursive=True)
    assert below.entries == await walk(remote, "src")
    assert [e.path for e in below.entries] == ["src/a.py", "src/pkg", "src/pkg/b.py"]


# --------------------------------------------------------------------------- file_modes


async def test_file_modes(store: Store, remote: Remote, write: WriteFactory) -> None:
    """With file_modes a write's mode is kept (the executable bit survives) and
    reported by stat and listings. Without it the write lands and no entry claims a
    mode (documented: the remote keeps none)."""
    result = await remote.apply([write("run.sh", b"#!/bin/sh\n", mode=0o755)])
    assert result.outcomes == [Applied(version=store.version(b"#!/bin/sh\n"))]
    assert store.files() == {"run.sh": b"#!/bin/sh\n"}
    entry = await remote.stat("run.sh")
    (listed,) = (await remote.list_tree("")).entries
    assert entry is not None
    if remote.capabilities.file_modes:
        assert entry.mode is not None and entry.mode & 0o777 == 0o755
        assert listed.mode is not None and listed.mode & 0o777 == 0o755
    else:
        assert (entry.mode, listed.mode) == (None, None)


# --------------------------------------------------------------------------- file_mtimes


async def test_file_mtimes(store: Store, remote: Remote, write: WriteFactory) -> None:
    """With file_mtimes a write's mtime is kept to the nanosecond and reported by stat
    and listings (rsync's quick check compares it). Without it the write lands and the
    remote keeps a time of its own (documented: the mount keeps ours locally)."""
    asked = 1_000_000_000_123_456_789  # 2001: no remote's own clock says that
    change = replace(write("t.txt", b"timed"), mtime_ns=asked)
    assert (await remote.apply([change])).outcomes == [Applied(version=store.version(b"timed"))]
    assert store.files() == {"t.txt": b"timed"}
    entry = await remote.stat("t.txt")
    (listed,) = (await remote.list_tree("")).entries
    assert entry is not None
    if remote.capabilities.file_mtimes:
        assert (entry.time_ns(), listed.time_ns()) == (asked, asked)
    else:
        assert asked not in (entry.time_ns(), listed.time_ns())


# --------------------------------------------------------------------------- symlinks


async def test_symlinks(face: Face, store: Store, remote: Remote, write: WriteFactory) -> None:
    """With symlinks a Symlink change makes a link that lists and stats as a symlink
    with its target, reads as its target, and conflicts like a file (ABSENT expected
    where one is). Without it every Symlink change is refused and nothing is made."""
    if not remote.capabilities.symlinks:
        # (Terminal Use raised TypeError here until the contract suite caught it.)
        await assert_refused(remote, store, [Symlink("d/l", "../t.txt")])
        return
    version = store.version(b"../t.txt")
    result = await remote.apply([write("t.txt", b"text"), Symlink("d/l", "../t.txt")])
    assert result.outcomes == [Applied(version=store.version(b"text")), Applied(version=version)]
    assert store.kinds() == {"t.txt": "file", "d": "dir", "d/l": "symlink"}
    (listed,) = (await remote.list_tree("d")).entries
    assert (listed.path, listed.kind, listed.target, listed.version) == (
        "d/l",
        "symlink",
        "../t.txt",
        version,
    )
    entry = await remote.stat("d/l")
    assert entry is not None and (entry.kind, entry.target, entry.version) == (
        "symlink",
        "../t.txt",
        version,
    )
    dest = io.BytesIO()
    assert (await remote.read("d/l", dest)).version == version
    assert dest.getvalue() == b"../t.txt"
    result = await remote.apply([Symlink("d/l", "elsewhere")])
    assert result.outcomes == [Conflicted(current=version)]
    result = await remote.apply([Symlink("d/l", "elsewhere", expect=version)])
    assert result.outcomes == [Applied(version=store.version(b"elsewhere"))]
