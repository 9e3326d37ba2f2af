"""Contract: identity, info, listings, stat and reads, on every adapter."""

from __future__ import annotations

import io

import pytest

from contract.conftest import Face, Store, WriteFactory
from repomount.remotes.base import Applied, Conflict, Entry, NotFound, Remote
from support.util import sha

FILES = {
    "README.md": b"# readme\n",
    "src/a.py": b"a = 1\n",
    "src/pkg/b.py": b"b = 2\n" * 3,
    "docs/x/y/z.md": b"z\n",
}


def summary(entries: list[Entry]) -> list[tuple[str, str, int, str | None]]:
    """(path, kind, size, version) of each entry; directories have no size or version."""
    return [
        (e.path, e.kind, e.size if e.kind == "file" else 0, e.version if e.kind == "file" else None)
        for e in entries
    ]


async def test_identity_info_and_heads(
    face: Face, store: Store, remote: Remote, write: WriteFactory
) -> None:
    """The identity names the repository, not the credentials: the same for two adapters
    of one repository, different for another. info() names the repository; where the
    remote has a head, it moves with a commit, and a listing and an apply report the
    head they left the repository at."""
    token = store.server.token
    assert remote.identity and token not in remote.identity and token not in repr(remote)
    twin = face.open(store.server, store.name)
    store.server.create_repo(f"{store.name}-other")
    other = face.open(store.server, f"{store.name}-other")
    try:
        assert twin.identity == remote.identity
        assert other.identity != remote.identity
    finally:
        await twin.aclose()
        await other.aclose()

    before = await remote.info()
    assert before.name == store.name
    store.seed(FILES)
    after = await remote.info()
    listing = await remote.list_tree("")
    if after.head is not None:
        assert after.head != before.head
        assert listing.head == after.head
    if listing.head is not None:
        assert listing.head == (await remote.info()).head
    result = await remote.apply([write("new.txt", b"new")])
    assert result.outcomes == [Applied(version=store.version(b"new"))]
    now = await remote.info()
    if now.head is not None:
        assert result.head == now.head != after.head


async def test_list_tree_gives_the_direct_children(store: Store, remote: Remote) -> None:
    """A listing holds exactly the entries directly below the path, sorted, files with
    their size and version (the SHA-256 on every remote here), directories as dirs."""
    store.seed(FILES)
    root = await remote.list_tree("")
    assert (root.path, root.recursive) == ("", False)
    assert summary(root.entries) == [
        ("README.md", "file", 9, store.version(FILES["README.md"])),
        ("docs", "dir", 0, None),
        ("src", "dir", 0, None),
    ]
    src = await remote.list_tree("src")
    assert src.path == "src"
    assert summary(src.entries) == [
        ("src/a.py", "file", 6, store.version(FILES["src/a.py"])),
        ("src/pkg", "dir", 0, None),
    ]
    deep = await remote.list_tree("docs/x/y")
    assert summary(deep.entries) == [
        ("docs/x/y/z.md", "file", 2, store.version(FILES["docs/x/y/z.md"]))
    ]


async def test_listing_or_reading_a_missing_path_is_not_found(store: Store, remote: Remote) -> None:
    """list_tree of a path that is no directory (absent, or a file) and read of a path
    that is no file (absent, or a directory) raise NotFound."""
    store.seed(FILES)
    for path in ("missing", "README.md", "src/nope", "src/a.py"):
        with pytest.raises(NotFound):
            await remote.list_tree(path)
    for path in ("missing", "src/nope.py", "src", "src/a.py/below"):
        dest = io.BytesIO()
        with pytest.raises(NotFound):
            await remote.read(path, dest)
        assert dest.getvalue() == b""


async def test_stat_files_directories_and_absence(store: Store, remote: Remote) -> None:
    """stat gives a file's kind, size and version, a directory (the root too) as a dir,
    and None for nothing there, including a path below a file."""
    store.seed(FILES)
    entry = await remote.stat("src/pkg/b.py")
    assert entry is not None
    assert (entry.path, entry.kind, entry.size, entry.version) == (
        "src/pkg/b.py",
        "file",
        18,
        store.version(FILES["src/pkg/b.py"]),
    )
    for directory in ("", "src", "src/pkg", "docs/x"):
        found = await remote.stat(directory)
        assert found is not None and (found.path, found.kind) == (directory, "dir")
    for absent in ("missing", "src/pk", "src/a.py/below"):
        assert await remote.stat(absent) is None


async def test_read_whole_file(store: Store, remote: Remote) -> None:
    """A read delivers every byte (several chunks' worth) and reports the version it
    read, the size and how much it wrote; with the current version expected it reads the
    same; an empty file reads as nothing, at its version."""
    data = bytes(range(256)) * 2400  # 600 KiB
    store.seed({"big.bin": data, "empty": b""})
    dest = io.BytesIO()
    fetched = await remote.read("big.bin", dest)
    assert dest.getvalue() == data
    assert (fetched.version, fetched.size, fetched.written) == (
        store.version(data),
        len(data),
        len(data),
    )
    dest = io.BytesIO()
    fetched = await remote.read("big.bin", dest, version=store.version(data))
    assert dest.getvalue() == data and fetched.version == store.version(data)
    dest = io.BytesIO()
    fetched = await remote.read("empty", dest)
    assert dest.getvalue() == b""
    assert (fetched.version, fetched.size, fetched.written) == (store.version(b""), 0, 0)


async def test_read_of_a_moved_version_is_a_conflict_naming_the_current(
    face: Face, store: Store, remote: Remote
) -> None:
    """Reading at a version the file has left raises Conflict with the current version,
    for a whole read and a ranged one; `dest` then holds nothing, except where the
    adapter documents that it holds the current content (`clean_read_conflict`)."""
    old = store.put("f", b"one")
    new = store.put("f", b"two")
    for offset, length in [(0, None), (1, 1)]:
        dest = io.BytesIO()
        with pytest.raises(Conflict) as caught:
            await remote.read("f", dest, version=old, offset=offset, length=length)
        assert caught.value.current == new
        end = None if length is None else offset + length
        assert dest.getvalue() == (b"" if face.clean_read_conflict else b"two"[offset:end])


async def test_offset_and_length_deliver_that_slice(store: Store, remote: Remote) -> None:
    """Every adapter serves a byte range (with `ranged_read` by fetching only it, else by
    slicing the whole file: test_capabilities checks which): the middle, the tail, past
    the end (nothing) and length 0 (nothing), always with the whole file's size."""
    data = bytes(range(256)) * 4096  # 1 MiB
    store.seed({"blob.bin": data})
    size = len(data)
    for offset, length in [(1000, 5000), (262_140, 10), (size - 10, None), (size + 5, 10), (7, 0)]:
        dest = io.BytesIO()
        fetched = await remote.read("blob.bin", dest, offset=offset, length=length)
        end = None if length is None else offset + length
        assert dest.getvalue() == data[offset:end], (offset, length)
        assert (fetched.version, fetched.size, fetched.written) == (
            store.version(data),
            size,
            len(data[offset:end]),
        )
    dest = io.BytesIO()
    fetched = await remote.read("blob.bin", dest, offset=5, length=3, version=store.version(data))
    assert dest.getvalue() == data[5:8] and fetched.version == store.version(data)


async def test_a_written_version_is_the_one_everything_reports(
    face: Face, remote: Remote, write: WriteFactory
) -> None:
    """The version an applied write reports is the one stat, listings and reads report
    for that content, and the one version_of derives from its hash where versions come
    from content (`content_versions`; elsewhere version_of knows none)."""
    data = b"versioned content\n"
    result = await remote.apply([write("v/file.txt", data)])
    (outcome,) = result.outcomes
    assert isinstance(outcome, Applied) and outcome.version is not None
    version = outcome.version
    assert remote.version_of(sha(data)) == (version if face.content_versions else None)
    entry = await remote.stat("v/file.txt")
    assert entry is not None and entry.version == version
    (listed,) = (await remote.list_tree("v")).entries
    assert listed.version == version
    dest = io.BytesIO()
    assert (await remote.read("v/file.txt", dest, version=version)).version == version
    assert dest.getvalue() == data
