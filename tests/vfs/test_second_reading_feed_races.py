"""Races found by a second reading of change-feed trust (listing.py, watcher.py): each
test asserts what docs/semantics.md promises, and each failed before its fix.
(Large-file streaming and read-ahead: test_second_reading_races.py.)"""

from __future__ import annotations

import os
from dataclasses import replace

import trio

from repomount.remotes.base import ChangeBatch, Gone, NotFound, RemoteChange
from repomount.vfs import watcher
from support import vfsutil
from support.memremote import Item, MemRemote
from support.util import sha, wait_until_async
from support.vfsutil import MakeMount, close, open_path, read_all, read_file, resolve, write_file


class FeedRemote(MemRemote):
    """MemRemote with a change feed (every commit's changes, by head)."""

    def __init__(self, *, recursive_listing: bool = True) -> None:
        super().__init__(recursive_listing=recursive_listing)
        self.capabilities = replace(self.capabilities, change_feed=True)
        self.log: list[tuple[int, RemoteChange]] = []
        self._new = trio.Event()
        self.asked_since: str | None = None
        self.hold: str | None = None  # a listing of this path is held...
        self.holding = trio.Event()
        self.release = trio.Event()  # ... until this is set
        self.fail_lists = 0  # this many listings fail (transient)

    def _record(self, before: dict[str, Item]) -> None:
        after = self.items
        for p in sorted(set(before) | set(after)):
            old, new = before.get(p), after.get(p)
            if new is None:
                self.log.append((self.head_no, RemoteChange(p, "delete")))
            elif old is None or old != new:
                op = "mkdir" if new.kind == "dir" else "write"
                self.log.append((self.head_no, RemoteChange(p, op, new.version)))  # type: ignore[arg-type]
        self._new.set()
        self._new = trio.Event()

    def apply_now(self, changes):  # type: ignore[no-untyped-def]
        before = self.items
        result = super().apply_now(changes)
        if self.items is not before:
            self._record(before)
        return result

    def _commit_other(self, state: dict[str, Item]) -> None:
        before = self.items
        super()._commit_other(state)
        self._record(before)

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        self.asked_since = since
        await trio.lowlevel.checkpoint()
        if since is None:
            return ChangeBatch(self.head, [])
        if self.head_no == int(since):
            with trio.move_on_after(wait):
                await self._new.wait()
        return ChangeBatch(self.head, [c for h, c in self.log if h > int(since)])

    async def list_tree(self, path: str, *, recursive: bool = False):  # type: ignore[no-untyped-def]
        if self.fail_lists:
            self.fail_lists -= 1
            await trio.lowlevel.checkpoint()
            from repomount.remotes.base import Unavailable

            raise Unavailable("503 from a proxy")
        if path != self.hold:
            return await super().list_tree(path, recursive=recursive)
        answer = self.listing(path, recursive=recursive)  # taken now, delivered later
        self.holding.set()
        await self.release.wait()
        return answer


async def test_feed_an_old_save_of_ours_hides_a_revert_by_someone_else(
    make_mount: MakeMount,
) -> None:
    """shows(): a feed entry whose (path, version) is in _ours counts as ours whatever
    happened since. With versions = content hashes: we save A; another client writes B
    (re-listed: the mount shows B); it then reverts to A. The feed entry (f, A) matches
    our old save, so nothing is re-listed, and while the feed is followed the listing
    is trusted past the TTL: the mount shows B indefinitely."""
    remote = FeedRemote()
    remote.put("f", b"base")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        await write_file(m.vfs, "f", b"A")
        assert await m.drain() == []
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.put("f", b"B")
        await wait_until_async(
            lambda: (n := m.vfs.node_at("f")) is not None and n.version == sha(b"B"),
            5,
            "B shown",
        )
        remote.put("f", b"A")  # someone else reverts
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        await trio.sleep(0.5)  # past the metadata TTL
        shown = (await resolve(m.vfs, "f")).version
        nursery.cancel_scope.cancel()
    # (shown is B's version; open() then fails with Conflict -> EIO, every time)
    assert shown == sha(b"A")


async def test_feed_change_during_a_first_listing_is_not_lost(make_mount: MakeMount) -> None:
    """A directory's first listing is in flight (answered at head H); a change in it
    lands (H+1) and the feed reports it while the directory is still unloaded, so
    refresh_dirs skips it; then the old answer is merged. feed_live then trusts that
    listing for as long as the feed runs: the change never shows (before, the TTL
    bounded this to --metadata-ttl)."""
    remote = FeedRemote(recursive_listing=False)
    remote.put("d/x", b"old")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        d = await resolve(m.vfs, "d")
        remote.hold = "d"
        nursery.start_soon(m.vfs.lookup, d.ino, "x")
        await remote.holding.wait()
        remote.put("d/x", b"new")
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        await trio.sleep(0.1)
        remote.hold = None
        remote.release.set()
        await trio.sleep(0.5)  # past the metadata TTL
        x = await resolve(m.vfs, "d/x")
        nursery.cancel_scope.cancel()
    assert x.version == sha(b"new")


async def test_feed_relist_that_fails_once_is_retried(make_mount: MakeMount) -> None:
    """The feed reports a change in a loaded directory; its re-listing hits one
    transient error, which refresh() swallows ('offline: serve what we know'). Nothing
    retries it, and feed_live trusts the old listing past the TTL once the feed answers
    again: the change never shows (before, the TTL expiry re-listed it)."""
    remote = FeedRemote()
    remote.put("d/x", b"old")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        assert (await resolve(m.vfs, "d/x")).version == sha(b"old")
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.fail_lists = 1
        remote.put("d/x", b"new")
        await wait_until_async(lambda: remote.fail_lists == 0, 5, "the failed re-list")
        # (Until the remote answers again the mount counts as offline and serves what
        # it knows; the feed's next answer says it is back.)
        remote.put("elsewhere", b"wake the feed")
        await wait_until_async(lambda: m.vfs.health.online, 5, "back online")
        await trio.sleep(0.5)  # past the metadata TTL
        x = await resolve(m.vfs, "d/x")
        nursery.cancel_scope.cancel()
    assert x.version == sha(b"new")


async def test_feed_control_a_change_elsewhere_shows(make_mount: MakeMount) -> None:
    """Control for the feed tests above (passes): with nothing going wrong, the same
    FeedRemote's change shows."""
    remote = FeedRemote()
    remote.put("d/x", b"old")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        assert (await resolve(m.vfs, "d/x")).version == sha(b"old")
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.put("d/x", b"new")
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        await trio.sleep(0.5)
        x = await resolve(m.vfs, "d/x")
        nursery.cancel_scope.cancel()
    assert x.version == sha(b"new")


async def test_feed_file_held_back_while_open_catches_up_at_close(make_mount: MakeMount) -> None:
    """A file open while the feed re-lists its directory is left at its version
    (held_back); its last close pops the parent from `fresh` so the next look re-lists.
    But _trusted() now trusts any loaded listing while feed_live, whatever `fresh`
    says: the re-list never happens and the closed file shows its old content for as
    long as the feed runs. (adopt_remote relies on the same fresh.pop.)"""
    remote = FeedRemote()
    remote.put("d/f", b"old")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        fh, node = await open_path(m.vfs, "d/f", os.O_RDONLY)
        assert await read_all(m.vfs, fh) == b"old"
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.put("d/f", b"new")
        await wait_until_async(lambda: node.ino in m.vfs.held_back, 5, "the re-list")
        await close(m.vfs, fh)
        await trio.sleep(0.5)  # past the metadata TTL
        shown = await read_file(m.vfs, "d/f")
        nursery.cancel_scope.cancel()
    assert shown == b"new"


class DeletableFeedRemote(FeedRemote):
    """A FeedRemote whose repo can be deleted (every call then says NotFound) and made
    again, counting its heads from the start."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted = False
        self.not_found = 0  # feed polls answered NotFound

    def delete_repo(self) -> None:
        self.deleted = True
        self.items, self.head_no, self.log = {}, 0, []
        self._new.set()  # (a poll open now answers)

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        if not self.deleted:
            answer = await super().changes(since, wait=wait)
            if not self.deleted:
                return answer
        # (a poll open when the repo goes answers 404 too, as the server's does)
        self.not_found += 1
        await trio.lowlevel.checkpoint()
        raise NotFound("404 no repository named 'r'")

    async def list_tree(self, path: str, *, recursive: bool = False):  # type: ignore[no-untyped-def]
        if self.deleted:
            await trio.lowlevel.checkpoint()
            raise NotFound("404 no repository named 'r'")
        return await super().list_tree(path, recursive=recursive)


async def test_a_repo_deleted_and_made_again_is_listed_again(make_mount: MakeMount) -> None:
    """The feed's position named the old repo's history: the new one counts its heads
    from the start, and its first commit has the head the mount followed from. Before,
    the feed went on from there and the mount showed the old repo's files for as long
    as it followed it."""
    remote = DeletableFeedRemote()
    remote.put("old", b"gone with the repo")
    m = await make_mount(remote, metadata_ttl=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        assert await vfsutil.listdir(m.vfs, "") == ["old"]
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.delete_repo()
        await wait_until_async(lambda: remote.not_found > 0, 5, "the feed's 404")
        remote.deleted = False
        remote.put("new", b"in the new repo")  # the same head as "old" had
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        await trio.sleep(0.5)  # past the metadata TTL: what is shown is what is trusted
        names = await vfsutil.listdir(m.vfs, "")
        nursery.cancel_scope.cancel()
    assert names == ["new"]


class ForgetfulFeedRemote(FeedRemote):
    """A FeedRemote that, once asked to, answers a poll with Gone (the history after
    its position no longer kept) instead of the changes."""

    def __init__(self) -> None:
        super().__init__()
        self.forget = False

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        answer = await super().changes(since, wait=wait)
        if self.forget and since is not None:
            self.forget = False
            raise Gone(f"changes since {since} are not kept")
        return answer


async def test_a_feed_position_too_old_has_the_tree_listed_again(
    make_mount: MakeMount,
) -> None:
    """The feed answers Gone where it would have reported someone else's change: the
    mount lists the tree again from the head, and shows it."""
    remote = ForgetfulFeedRemote()
    remote.put("f", b"one")
    m = await make_mount(remote, metadata_ttl=3600.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.watch, m.vfs, 0.05)
        assert await read_file(m.vfs, "f") == b"one"
        await wait_until_async(lambda: remote.asked_since == remote.head, 5, "the feed")
        remote.forget = True
        remote.put("f", b"two")  # reported as Gone, not as this change
        await wait_until_async(
            lambda: (n := m.vfs.node_at("f")) is not None and n.version == sha(b"two"),
            5,
            "the tree listed again",
        )
        nursery.cancel_scope.cancel()
    assert await read_file(m.vfs, "f") == b"two"
