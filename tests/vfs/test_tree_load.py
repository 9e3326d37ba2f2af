"""The whole tree's first listing loads behind a lookup (issue 12: the first open after
mounting a large repo waited for a listing of every file). A lookup lists its own
directory; a directory read waits for the tree in flight instead of listing its own."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from repomount.remotes.base import Listing, Unavailable
from support.memremote import MemRemote
from support.vfsutil import MakeMount, listdir, read_file, resolve


class HeldTree(MemRemote):
    """Records each listing asked for; holds recursive ones until `release` (then
    fails the next `fail` of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []
        self.held = trio.Event()  # a recursive listing is being held
        self.release = trio.Event()
        self.fail = 0

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        self.calls.append((path, recursive))
        if recursive:
            self.held.set()
            await self.release.wait()
            if self.fail:
                self.fail -= 1
                raise Unavailable("injected: the tree's listing failed", status=503)
        return await super().list_tree(path, recursive=recursive)


@pytest.fixture
def held() -> HeldTree:
    remote = HeldTree()
    remote.put("top.txt", b"top")
    for i in range(3):
        remote.put(f"a/b/c/f{i}", b"deep %d" % i)
    remote.put("x/y/z", b"z")
    return remote


async def test_a_lookup_after_mounting_does_not_wait_for_the_whole_tree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    with trio.fail_after(5):  # (the tree is held: a lookup waiting for it never ends)
        assert await read_file(m.vfs, "top.txt") == b"top"
        await held.held.wait()  # asked for behind the lookup
        assert await read_file(m.vfs, "a/b/c/f1") == b"deep 1"
    assert held.calls == [("", False), ("", True), ("a", False), ("a/b", False), ("a/b/c", False)]
    loading = m.vfs.tree.loading
    assert loading is not None
    held.release.set()
    with trio.fail_after(5):
        await loading.wait()
    assert m.vfs.tree.loaded
    # Loaded: a directory never used before costs nothing more.
    assert await listdir(m.vfs, "x/y") == ["z"]
    assert await read_file(m.vfs, "x/y/z") == b"z"
    assert len(held.calls) == 5


async def test_a_directory_read_waits_for_the_tree_in_flight(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")
    await held.held.wait()
    got: list[list[str]] = []

    async def read_dir() -> None:
        got.append(await listdir(m.vfs, "a/b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_dir)
        await trio.sleep(0.05)  # (a wrong answer would be a listing of its own by now)
        # The lookup of "b" lists "a" alone; reading "a/b" itself waits.
        assert got == [] and held.calls == [("", False), ("", True), ("a", False)]
        held.release.set()
    assert got == [["c"]]
    assert held.calls == [("", False), ("", True), ("a", False)]


async def test_lookups_wait_for_the_tree_once_their_own_listings_are_spent(
    make_mount: MakeMount, held: HeldTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repomount.vfs.treeload.OWN_LISTINGS", 1)
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")  # the one listing of its own
    await held.held.wait()
    found: list[bytes] = []

    async def read_deep() -> None:
        found.append(await read_file(m.vfs, "x/y/z"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_deep)
        await trio.sleep(0.05)
        assert found == [] and held.calls == [("", False), ("", True)]
        held.release.set()
    assert found == [b"z"]
    assert held.calls == [("", False), ("", True)]


async def test_a_tree_that_failed_to_load_is_asked_for_again_by_the_next_lookup(
    make_mount: MakeMount, held: HeldTree
) -> None:
    held.fail = 1
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")
    await held.held.wait()
    loading = m.vfs.tree.loading
    assert loading is not None
    held.release.set()
    with trio.fail_after(5):
        await loading.wait()  # (failed)
        assert await listdir(m.vfs, "a/b") == ["c"]
    # The lookup of "a" lists it alone and asks for the tree again; the read of "a/b"
    # waits for that.
    assert held.calls == [("", False), ("", True), ("a", False), ("", True)]
    assert m.vfs.tree.loaded


async def test_once_lookups_are_spent_a_failed_tree_leaves_each_use_to_list_on_its_own(
    make_mount: MakeMount, held: HeldTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repomount.vfs.treeload.OWN_LISTINGS", 1)
    held.fail = 1
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")
    await held.held.wait()
    loading = m.vfs.tree.loading
    assert loading is not None
    held.release.set()
    with trio.fail_after(5):
        await loading.wait()  # (failed)
        assert await listdir(m.vfs, "a/b") == ["c"]
    # "a" listed with all below it, as a first listing was before the tree loaded behind
    assert held.calls == [("", False), ("", True), ("a", True)]
    assert not m.vfs.tree.loaded


async def test_with_no_background_task_the_first_listing_takes_the_tree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    held.release.set()
    m = await make_mount(held, flusher=False)  # (nothing hosts the tree's load)
    assert await read_file(m.vfs, "a/b/c/f2") == b"deep 2"
    assert held.calls == [("", True)]
    assert m.vfs.tree.loaded


async def test_where_a_directory_costs_the_whole_tree_a_lookup_takes_the_tree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    # (Relace, Terminal Use, Sentry cut a directory's listing from the whole tree's)
    held.capabilities = replace(held.capabilities, directory_listing=False)
    held.release.set()
    m = await make_mount(held)
    assert await read_file(m.vfs, "a/b/c/f0") == b"deep 0"
    assert held.calls == [("", True)]
    assert m.vfs.tree.loaded
