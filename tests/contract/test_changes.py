"""Contract: conditional changes and their outcomes, one change at a time.

Create, replace, overwrite, delete and rename, each with its precondition; the outcome
must be what the store then holds. Delete and rename are checked where declared; where
not, they must be refused with Unsupported and change nothing. Batches are in
test_capabilities.py (atomic_batch).
"""

from __future__ import annotations

from contract.conftest import Store, WriteFactory, assert_refused
from repomount.remotes.base import Applied, Conflicted, Delete, Expect, Remote, Rename


async def test_create_when_absent_and_conflicted_when_present(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """A create (expect ABSENT) lands where nothing is; where a file is, it is
    Conflicted with that file's version and the file is left alone."""
    result = await remote.apply([write("new/file.txt", b"v1")])
    assert result.outcomes == [Applied(version=store.version(b"v1"))]
    assert store.files() == {"new/file.txt": b"v1"}
    theirs = store.put("taken.txt", b"theirs")
    result = await remote.apply([write("taken.txt", b"mine")])
    assert result.outcomes == [Conflicted(current=theirs)]
    result = await remote.apply([write("new/file.txt", b"mine")])
    assert result.outcomes == [Conflicted(current=store.version(b"v1"))]
    assert store.files() == {"new/file.txt": b"v1", "taken.txt": b"theirs"}


async def test_replace_expecting_the_current_version(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """A write expecting the file's current version lands, and the next write can
    expect the version the first one reported."""
    v1 = store.put("f.txt", b"one")
    first = await remote.apply([write("f.txt", b"two", expect=v1)])
    assert first.outcomes == [Applied(version=store.version(b"two"))]
    second = await remote.apply([write("f.txt", b"three", expect=store.version(b"two"))])
    assert second.outcomes == [Applied(version=store.version(b"three"))]
    assert store.files() == {"f.txt": b"three"}


async def test_replace_when_the_version_moved_is_conflicted_with_the_current(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """A write expecting a version the file has left is Conflicted with the version
    there now, and one expecting a version of a file that is gone is Conflicted with
    None; neither writes anything."""
    base = store.put("f.txt", b"base")
    theirs = store.put("f.txt", b"theirs")
    store.seed({"other.txt": b"o"})
    head = store.head()
    result = await remote.apply([write("f.txt", b"mine", expect=base)])
    assert result.outcomes == [Conflicted(current=theirs)]
    result = await remote.apply([write("gone.txt", b"mine", expect=base)])
    assert result.outcomes == [Conflicted(current=None)]
    assert store.files() == {"f.txt": b"theirs", "other.txt": b"o"}
    assert store.head() == head


async def test_expect_any_overwrites_whatever_is_there(
    store: Store, remote: Remote, write: WriteFactory
) -> None:
    """With no precondition (expect ANY) a write lands over any version, or none."""
    store.put("f.txt", b"theirs")
    result = await remote.apply(
        [write("f.txt", b"mine", expect=Expect.ANY), write("g.txt", b"g", expect=Expect.ANY)]
    )
    assert result.outcomes == [
        Applied(version=store.version(b"mine")),
        Applied(version=store.version(b"g")),
    ]
    assert store.files() == {"f.txt": b"mine", "g.txt": b"g"}


async def test_delete_expecting_a_version(store: Store, remote: Remote) -> None:
    """With `delete`: a delete expecting the current version removes the file; one
    expecting a version the file has left is Conflicted with the current version; one
    expecting a version of a file that is gone is Conflicted with None. Without it:
    every delete is refused with Unsupported and nothing changes."""
    v = store.put("d/gone.txt", b"bye")
    old = store.put("d/kept.txt", b"old")
    now = store.put("d/kept.txt", b"new")
    if not remote.capabilities.delete:
        await assert_refused(
            remote,
            store,
            [Delete("d/gone.txt", expect=v), Delete("d/kept.txt"), Delete("nowhere", expect=v)],
        )
        return
    result = await remote.apply([Delete("d/gone.txt", expect=v)])
    assert result.outcomes == [Applied(version=None)]
    result = await remote.apply([Delete("d/kept.txt", expect=old)])
    assert result.outcomes == [Conflicted(current=now)]
    result = await remote.apply([Delete("nowhere.txt", expect=v)])
    assert result.outcomes == [Conflicted(current=None)]
    assert store.files() == {"d/kept.txt": b"new"}


async def test_rename_expecting_versions(store: Store, remote: Remote) -> None:
    """With `rename`: a rename expecting the source's version moves the file (its
    version travels with it); a moved source version is Conflicted with the current
    one; a destination that is not as expected (ABSENT, or a version) is Conflicted
    with the destination's version; expecting both right replaces the destination.
    Without it: every rename is refused with Unsupported and nothing changes."""
    a = store.put("a.txt", b"A")
    b = store.put("b.txt", b"B")
    old = store.put("c.txt", b"C1")
    c = store.put("c.txt", b"C2")
    if not remote.capabilities.rename:
        await assert_refused(
            remote,
            store,
            [Rename("a.txt", "moved/a.txt", expect=a), Rename("b.txt", "x.txt")],
        )
        return
    result = await remote.apply([Rename("a.txt", "moved/a.txt", expect=a)])
    assert result.outcomes == [Applied(version=a)]
    result = await remote.apply([Rename("c.txt", "d.txt", expect=old)])
    assert result.outcomes == [Conflicted(current=c)]
    result = await remote.apply([Rename("c.txt", "b.txt", expect=c, expect_to=Expect.ABSENT)])
    assert result.outcomes == [Conflicted(current=b)]
    result = await remote.apply([Rename("c.txt", "b.txt", expect=c, expect_to=a)])
    assert result.outcomes == [Conflicted(current=b)]
    assert store.files() == {"moved/a.txt": b"A", "b.txt": b"B", "c.txt": b"C2"}
    result = await remote.apply([Rename("c.txt", "b.txt", expect=c, expect_to=b)])
    assert result.outcomes == [Applied(version=c)]
    assert store.files() == {"moved/a.txt": b"A", "b.txt": b"C2"}


async def test_an_empty_batch_changes_nothing(store: Store, remote: Remote) -> None:
    """apply([]) reports no outcomes and makes no commit."""
    store.put("f.txt", b"f")
    head = store.head()
    result = await remote.apply([])
    assert result.outcomes == []
    assert store.head() == head
