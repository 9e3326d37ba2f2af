"""Which first listings take a subtree (issue 12: the first open after mounting a large
repo waited for a listing of every file). A lookup lists its own directory alone; a
read of a directory lists what is below it; once lookups have listed alone
OWN_LISTINGS times, the whole tree loads behind them and they wait for it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from repomount.remotes.base import Listing, Unavailable
from support.memremote import MemRemote
from support.vfsutil import ROOT, MakeMount, listdir, read_file, resolve


class HeldTree(MemRemote):
    """Records each listing asked for; holds recursive listings of the root until
    `release` (then fails the next `fail` of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []
        self.held = trio.Event()  # a recursive listing of the root is being held
        self.release = trio.Event()
        self.fail = 0

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        self.calls.append((path, recursive))
        if recursive and path == "":
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
    remote.put("a/b/side/s", b"s")
    remote.put("x/y/z", b"z")
    return remote


async def test_lookups_list_their_own_directory_and_never_wait_for_the_tree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    with trio.fail_after(5):  # (the tree is held: a use waiting for it never ends)
        assert await read_file(m.vfs, "top.txt") == b"top"
        assert await read_file(m.vfs, "a/b/c/f1") == b"deep 1"
    assert held.calls == [("", False), ("a", False), ("a/b", False), ("a/b/c", False)]
    assert not held.held.is_set()  # (nothing asked for the whole tree)


async def test_a_read_of_a_directory_a_lookup_listed_lists_its_subtree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    await resolve(m.vfs, "a/b/c")  # lists "", "a", "a/b" alone
    assert await listdir(m.vfs, "a/b") == ["c", "side"]
    assert held.calls[3:] == [("a/b", True)]
    # The walk below it costs nothing more.
    assert await listdir(m.vfs, "a/b/side") == ["s"]
    assert await read_file(m.vfs, "a/b/c/f2") == b"deep 2"
    assert await listdir(m.vfs, "a/b") == ["c", "side"]
    assert len(held.calls) == 4


async def test_a_first_read_of_a_directory_never_listed_lists_its_subtree(
    make_mount: MakeMount, held: HeldTree
) -> None:
    held.release.set()
    m = await make_mount(held)
    assert await listdir(m.vfs, "") == ["a", "top.txt", "x"]  # (the root: the tree)
    assert await listdir(m.vfs, "x/y") == ["z"]
    assert held.calls == [("", True)]
    assert m.vfs.tree.loaded


async def test_once_lookups_have_listed_alone_enough_the_tree_loads_and_they_wait(
    make_mount: MakeMount, held: HeldTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repomount.vfs.treeload.OWN_LISTINGS", 1)
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")  # the one listing of its own
    found: list[bytes] = []

    async def read_deep() -> None:
        found.append(await read_file(m.vfs, "x/y/z"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_deep)
        await held.held.wait()
        # Waiting for the tree: no listing of "x" of its own.
        assert found == [] and held.calls == [("", False), ("", True)]
        held.release.set()
    assert found == [b"z"]
    assert held.calls == [("", False), ("", True)]
    assert m.vfs.tree.loaded


async def test_a_tree_that_failed_to_load_leaves_each_use_to_list_on_its_own(
    make_mount: MakeMount, held: HeldTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repomount.vfs.treeload.OWN_LISTINGS", 1)
    held.fail = 1
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")
    held.release.set()
    with trio.fail_after(5):
        assert await read_file(m.vfs, "x/y/z") == b"z"  # waited for the load, which failed
        assert await read_file(m.vfs, "a/b/c/f0") == b"deep 0"
    # (not asked for again at once: each first listing took its own subtree)
    assert held.calls == [("", False), ("", True), ("x", True), ("a", True)]
    assert not m.vfs.tree.loaded


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


async def test_offline_a_read_of_a_directory_listed_alone_serves_what_is_known(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    await resolve(m.vfs, "a/b")  # "" and "a" listed alone
    m.vfs.health.failed(Unavailable("injected: away", status=503))
    assert await listdir(m.vfs, "a") == ["b"]
    assert held.calls == [("", False), ("a", False)]


async def test_a_directory_renamed_here_is_not_listed_below_until_the_rename_lands(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held, flusher=False)  # (the rename stays pending)
    await resolve(m.vfs, "a/b")  # "" and "a" listed alone
    await m.vfs.rename(ROOT, "a", ROOT, "a2", 0)  # (lists what it moves, each alone)
    sent = len(held.calls)
    assert await listdir(m.vfs, "a2") == ["b"]  # the journal decides what it holds
    assert await listdir(m.vfs, "a2/b") == ["c", "side"]
    assert len(held.calls) == sent and not any(recursive for _, recursive in held.calls)


async def test_a_directory_gone_from_the_remote_is_tried_below_once(
    make_mount: MakeMount, held: HeldTree
) -> None:
    m = await make_mount(held)
    await resolve(m.vfs, "x/y")  # "" and "x" listed alone
    held.remove("x")
    assert await listdir(m.vfs, "x") == ["y"]  # (what is known, until it is re-listed)
    assert await listdir(m.vfs, "x") == ["y"]
    assert held.calls == [("", False), ("x", False), ("x", True)]


async def test_an_unexpected_failure_of_the_trees_load_leaves_the_mount_serving(
    make_mount: MakeMount, held: HeldTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("repomount.vfs.treeload.OWN_LISTINGS", 1)

    async def broken(path: str, *, recursive: bool = False) -> Listing:
        held.calls.append((path, recursive))
        if recursive and path == "":
            raise RuntimeError("a bug in the listing's merge, say")
        return await MemRemote.list_tree(held, path, recursive=recursive)

    monkeypatch.setattr(held, "list_tree", broken)
    m = await make_mount(held)
    await resolve(m.vfs, "top.txt")
    with trio.fail_after(5):
        assert await read_file(m.vfs, "x/y/z") == b"z"  # (the load failed: listed alone)
    assert ("", True) in held.calls and not m.vfs.tree.loaded
    assert await read_file(m.vfs, "top.txt") == b"top"


async def test_a_poll_of_the_tree_does_not_count_as_its_load(
    make_mount: MakeMount, held: HeldTree
) -> None:
    held.release.set()
    m = await make_mount(held)
    await resolve(m.vfs, "a/b")  # "" and "a" listed alone
    await m.vfs.refresh_tree()  # (a remote without a change feed is polled so)
    assert not m.vfs.tree.loaded
    sent = len(held.calls)
    assert await listdir(m.vfs, "a") == ["b"]
    assert held.calls[sent:] == [("a", True)]  # still listed below when read
