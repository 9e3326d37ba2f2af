"""SqliteStore.collect_garbage (server/gc.py), in process: what it frees and what it keeps.

A blob's age is its file's mtime or its row's `mtime`; tests age a blob by setting it
back rather than by waiting out a grace period. Every test runs with small blobs as
rows (as stored now) and as files (as stored before rows existed, or when large).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repomount.server import smallblobs
from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import Delete, Gone, Idempotency, StoreError, UnknownBlob, Write
from support.blobkinds import all_blobs, blob_row, files_only, set_upload_time
from support.util import sha, wait_until

GRACE = 60.0


@pytest.fixture(autouse=True, params=["rows", "files"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "files":
        files_only(monkeypatch)
    return str(request.param)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data", history=1000)
    s.create_repo("r")
    yield s
    s.close()


def upload(store: SqliteStore, data: bytes) -> str:
    spool = store.new_spool()
    spool.write(data)
    store.add_blob(spool)
    return spool.sha256


def age(store: SqliteStore, blob: str, seconds: float = 2 * GRACE) -> None:
    set_upload_time(store.blobs.root, blob, time.time() - seconds)


def age_all(store: SqliteStore) -> None:
    for blob in all_blobs(store.blobs.root):
        age(store, blob)


def stored(store: SqliteStore) -> set[str]:
    return set(all_blobs(store.blobs.root))


def test_each_kind_is_what_the_test_says(store: SqliteStore, kind: str) -> None:
    blob = upload(store, b"small")
    assert (blob_row(store.blobs.root, blob) is not None) == (kind == "rows")
    assert store.blobs.path(blob).exists() == (kind == "files")


def test_only_old_unreferenced_blobs_go(store: SqliteStore) -> None:
    current, historic, orphan, young = (upload(store, d) for d in [b"cur", b"old", b"orph", b"yng"])
    store.commit("r", [Write("a", current), Write("b", historic)])
    store.commit("r", [Delete("b")])  # b stays readable at head 1
    for blob in (current, historic, orphan):
        age(store, blob)

    report = store.collect_garbage(GRACE)

    assert (report.freed, report.freed_bytes) == (1, len(b"orph"))
    assert (report.kept, report.kept_bytes) == (3, len(b"cur") + len(b"old") + len(b"yng"))
    assert stored(store) == {current, historic, young}
    _, entry = store.stat("r", "b", at=1)
    assert entry is not None
    with store.open_blob(entry.version or "") as f:
        assert f.read() == b"old"


def test_versions_older_than_the_history_are_freed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data", history=2)
    try:
        store.create_repo("r")
        blobs = [upload(store, f"v{n}".encode()) for n in range(4)]
        for blob in blobs:
            store.commit("r", [Write("x", blob)])
        age_all(store)
        assert store.collect_garbage(GRACE).freed == 1
        assert stored(store) == set(blobs[1:])  # heads 2..4 are kept: v1, v2, v3
        with pytest.raises(Gone):
            store.stat("r", "x", at=1)
    finally:
        store.close()


def test_a_lowered_history_is_applied_by_the_gc(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data", history=100)
    store.create_repo("r")
    blobs = [upload(store, f"v{n}".encode()) for n in range(4)]
    for blob in blobs:
        store.commit("r", [Write("x", blob)])
    age_all(store)
    assert store.collect_garbage(GRACE).freed == 0
    store.close()

    store = SqliteStore(tmp_path / "data", history=1)  # keeps heads 3 and 4
    try:
        assert store.collect_garbage(GRACE).freed == 2
        assert stored(store) == set(blobs[2:])
        _, entry = store.stat("r", "x", at=3)
        assert entry is not None and entry.version == blobs[2]
    finally:
        store.close()


def test_a_deleted_repos_blobs_go_but_shared_ones_stay(store: SqliteStore) -> None:
    store.create_repo("other")
    own, shared = upload(store, b"own"), upload(store, b"shared")
    store.commit("r", [Write("a", own), Write("b", shared)])
    store.commit("other", [Write("c", shared)])
    store.delete_repo("r")
    age_all(store)

    assert store.collect_garbage(GRACE).freed == 1
    assert stored(store) == {shared}
    _, entry = store.stat("other", "c")
    assert entry is not None and entry.version == shared


def test_uploading_again_or_finding_a_blob_keeps_it(store: SqliteStore) -> None:
    again, found, _neither = (upload(store, d) for d in [b"again", b"found", b"neither"])
    age_all(store)
    assert upload(store, b"again") == again  # present: not stored anew, but refreshed
    assert store.has_blob(found)  # as a pack checks its members

    assert store.collect_garbage(GRACE).freed == 1
    assert stored(store) == {again, found}
    store.commit("r", [Write("a", again), Write("b", found)])


def test_a_commit_naming_a_blob_found_present_keeps_it_by_its_entry(
    store: SqliteStore, kind: str
) -> None:
    """A pack finds both blobs present (a refresh each, in memory); the commit naming
    one writes the other's refresh to its row, not the named one's (its entry keeps it,
    and rewriting a row costs as much as the row is long). Neither goes."""
    named, other = upload(store, b"named" * 1000), upload(store, b"other" * 1000)
    age_all(store)
    before = all_blobs(store.blobs.root)
    assert store.has_blob(named) and store.has_blob(other)
    store.commit("r", [Write("a", named)])
    after = all_blobs(store.blobs.root)
    assert after[other] > time.time() - GRACE  # refreshed
    if kind == "rows":
        assert after[named] == before[named]  # left as it was
    assert store.collect_garbage(GRACE).freed == 0
    assert stored(store) == {named, other}


@pytest.mark.parametrize("then", ["write and delete", "replay", "delete repo", "prune"])
def test_a_blob_found_present_outlives_another_commit_naming_it(
    tmp_path: Path, kind: str, then: str
) -> None:
    """One client's pack finds a blob present; before that client commits, another
    commit names the blob but leaves no entry that keeps it: it writes and deletes the
    file at once, or replays a recorded commit, or its repository goes, or its entry is
    replaced and pruned. The first client was told the blob is stored: its commit must
    still find it after a GC pass (the refresh is the pack's, not the naming commit's)."""
    store = SqliteStore(tmp_path / "data", history=1)
    try:
        for name in ("r", "other"):
            store.create_repo(name)
        blob = upload(store, b"found" * 1000)
        key = Idempotency("k", "fingerprint")
        if then == "replay":  # the recorded commit landed long ago, its entry is gone
            store.commit("other", [Write("a", blob)], idempotency=key)
            store.commit("other", [Delete("a")])
            store.commit("other", [Write("b", upload(store, b"b"))])
        age_all(store)
        assert store.has_blob(blob)  # the first client's pack: found, refreshed
        if then == "write and delete":
            store.commit("other", [Write("a", blob), Delete("a")])
        elif then == "replay":
            assert store.commit("other", [Write("a", blob)], idempotency=key).replayed
        else:
            store.commit("other", [Write("a", blob)])
            if then == "delete repo":
                store.delete_repo("other")
            else:
                store.commit("other", [Delete("a")])
                store.commit("other", [Write("b", upload(store, b"b"))])  # prunes a's row
        store.collect_garbage(GRACE)
        assert blob in stored(store)
        store.commit("r", [Write("mine", blob)])  # not 422 unknown_blob
    finally:
        store.close()


def test_refreshes_leave_to_gc_are_written_on_close_and_past_their_limit(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh a commit left to the GC (smallblobs.py) is written when the store closes
    (so it holds across a restart), and once LEFT_TO_GC_MAX are left so, by the next
    write transaction. (A blob kept as a file is refreshed at once: its mtime.)"""
    rows = kind == "rows"

    def left_alone(blob: str) -> bool:  # (not refreshed yet, where that is deferred)
        then = all_blobs(store.blobs.root)[blob]
        return then == before[blob] if rows else then > time.time() - GRACE

    monkeypatch.setattr(smallblobs, "LEFT_TO_GC_MAX", 1)
    store = SqliteStore(tmp_path / "data", history=1000)
    store.create_repo("r")
    first, second, third = (upload(store, d * 1000) for d in (b"1", b"2", b"3"))
    age_all(store)
    before = all_blobs(store.blobs.root)
    for n, blob in enumerate((first, second)):
        assert store.has_blob(blob)
        store.commit("r", [Write(f"f{n}", blob)])
    assert left_alone(first)  # left to the GC, not written
    store.create_repo("another")  # (a write transaction that writes no refresh)
    store.commit("r", [Delete("f0")])  # writes the two left to the GC: past the limit
    after = all_blobs(store.blobs.root)
    assert after[first] > time.time() - GRACE and after[second] > time.time() - GRACE
    assert store.has_blob(third)
    store.commit("r", [Write("f3", third)])
    assert left_alone(third)
    store.close()
    assert all_blobs(store.blobs.root)[third] > time.time() - GRACE


def test_a_commit_naming_a_collected_blob_is_refused_whole(store: SqliteStore) -> None:
    kept, gone = upload(store, b"kept"), upload(store, b"gone")
    age(store, gone)
    store.collect_garbage(GRACE)
    with pytest.raises(UnknownBlob):
        store.commit("r", [Write("a", kept), Write("b", gone)])
    assert store.head("r") == 0


def test_a_commit_arriving_mid_sweep_waits_and_is_refused(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sharpest race, made to happen: a commit naming an old orphan arrives just as
    the GC has decided to remove it. It must wait for the removal and then be refused,
    not land before the removal (which would leave it naming a missing blob)."""
    blob = upload(store, b"racing")
    age(store, blob)
    outcome: list[BaseException | int] = []

    def commit() -> None:
        try:
            outcome.append(store.commit("r", [Write("a", blob)]).head)
        except StoreError as error:
            outcome.append(error)

    def race() -> None:
        racer = threading.Thread(target=commit)
        racer.start()
        # Proving a negative needs a time bound: the racer must still be waiting.
        racer.join(1.0)
        assert racer.is_alive() and not outcome

    real_remove, real_remove_row = store.blobs.remove_if_older, store.small.remove_if_older

    def remove_if_older(sha256: str, cutoff: float) -> int | None:
        race()
        return real_remove(sha256, cutoff)

    def remove_row_if_older(db: sqlite3.Connection, sha256: str, cutoff: float) -> int | None:
        race()
        return real_remove_row(db, sha256, cutoff)

    monkeypatch.setattr(store.blobs, "remove_if_older", remove_if_older)
    monkeypatch.setattr(store.small, "remove_if_older", remove_row_if_older)
    assert store.collect_garbage(GRACE).freed == 1
    wait_until(lambda: outcome, 10, "the racing commit to end")
    assert isinstance(outcome[0], UnknownBlob)
    assert store.head("r") == 0


def test_files_that_are_not_blobs_are_left_alone(store: SqliteStore) -> None:
    """(With rows, the blob is a row and the strays lie where its file would be.)"""
    blob = upload(store, b"misplaced")
    shard = store.blobs.blobs / blob[:2]
    stray = [shard / "notes.txt", store.blobs.blobs / "ff" / blob]  # a blob in the wrong shard
    for path in stray:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    age_all(store)
    old = time.time() - 2 * GRACE
    for path in stray:
        os.utime(path, (old, old))
    assert store.collect_garbage(GRACE).freed == 1
    assert all(path.exists() for path in stray)


def kept_heads(store: SqliteStore, repo: str) -> Iterator[int]:
    head = store.head(repo)
    for at in range(head, -1, -1):
        try:
            store.stat(repo, "", at=at)
        except Gone:
            return
        yield at


def referenced(store: SqliteStore) -> set[str]:
    """Every blob a file visible at some kept head of some repository names."""
    found = set()
    for info in store.list_repos():
        for at in kept_heads(store, info.name):
            page = store.list_tree(info.name, "", recursive=True, at=at, after=None, limit=10**6)
            found |= {e.version for e in page.entries if e.type == "file" and e.version}
    return found


def assert_all_readable(store: SqliteStore) -> None:
    for info in store.list_repos():
        for at in kept_heads(store, info.name):
            page = store.list_tree(info.name, "", recursive=True, at=at, after=None, limit=10**6)
            for entry in page.entries:
                if entry.type == "file":
                    with store.open_blob(entry.version or "") as f:
                        assert sha(f.read()) == entry.version, (info.name, at, entry.path)


CONTENTS = [f"content {n}".encode() for n in range(6)]
action = st.one_of(
    st.tuples(st.just("write"), st.sampled_from("rs"), st.sampled_from("ab"), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.sampled_from("rs"), st.sampled_from("ab")),
    st.tuples(st.just("upload"), st.integers(0, 5)),
    st.tuples(st.just("recreate"), st.sampled_from("rs")),
    st.tuples(st.just("time_passes")),
    st.tuples(st.just("gc")),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(action, max_size=30))
def test_property_a_referenced_blob_is_never_collected(actions: list[tuple]) -> None:
    """After any sequence of uploads, commits, repo deletions, ageing and collections,
    every file at every kept head is readable, and every blob left is either named by
    one of them or younger than the grace period."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "data", history=3)
        try:
            for repo in "rs":
                store.create_repo(repo)
            for act in actions:
                try:
                    run(store, act)
                except StoreError:
                    pass  # deleting a missing file: refused, changes nothing
            report = store.collect_garbage(GRACE)
            assert_all_readable(store)
            cutoff = time.time() - GRACE
            young = {b for b, mtime in all_blobs(store.blobs.root).items() if mtime >= cutoff}
            assert stored(store) - young <= referenced(store)
            assert report.kept == len(stored(store))
        finally:
            store.close()


def run(store: SqliteStore, act: tuple) -> None:
    match act:
        case ("write", repo, path, n):
            store.commit(repo, [Write(path, upload(store, CONTENTS[n]))])
        case ("delete", repo, path):
            store.commit(repo, [Delete(path)])
        case ("upload", n):
            upload(store, CONTENTS[n])
        case ("recreate", repo):
            store.delete_repo(repo)
            store.create_repo(repo)
        case ("time_passes",):
            age_all(store)
        case ("gc",):
            store.collect_garbage(GRACE)
            assert_all_readable(store)


def test_collecting_while_committing_never_leaves_a_dangling_reference(tmp_path: Path) -> None:
    """Writers upload then commit while the GC runs back to back with no grace at all:
    each commit lands with its blob or is refused (UnknownBlob), never without it."""
    store = SqliteStore(tmp_path / "data", history=1)
    store.create_repo("r")
    done = threading.Event()
    freed: list[int] = []
    refused: list[int] = []

    def collector() -> None:
        while not done.is_set():
            freed.append(store.collect_garbage(0.0).freed)

    def writer(who: int) -> None:
        for n in range(150):
            blob = upload(store, f"writer {who} round {n}".encode())
            try:
                store.commit("r", [Write(f"w{who}/f{n % 5}", blob)])
            except UnknownBlob:
                refused.append(n)

    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    try:
        for t in writers:
            t.start()
        for t in writers:
            t.join(120)
    finally:
        done.set()
        gc_thread.join(120)
    try:
        assert not any(t.is_alive() for t in [gc_thread, *writers])
        assert sum(freed) > 0  # the GC did collect meanwhile (overwritten versions)
        assert_all_readable(store)
        listing = store.list_tree("r", "", recursive=True, at=None, after=None, limit=1000)
        assert len([e for e in listing.entries if e.type == "file"]) == 15
    finally:
        store.close()
