"""Races found by a second reading of large-file streaming (partial.py), read-ahead
(prefetch.py) and change-feed trust (listing.py, watcher.py): each test asserts what
docs/semantics.md promises, and each failed before its fix."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from typing import BinaryIO

import pytest
import trio

from repomount.remotes.base import ChangeBatch, Fetched, Gone, NotFound, RemoteChange
from repomount.vfs import watcher
from repomount.vfs.errors import FsError
from repomount.vfs.prefetch import Candidate
from support import vfsutil
from support.memremote import Item, MemRemote
from support.streamingremote import Streaming
from support.util import sha, wait_until_async
from support.vfsutil import MakeMount, close, open_path, read_all, read_file, resolve, write_file

MiB = 1 << 20
SIZE = 64 * MiB


def content() -> bytes:
    return b"".join(bytes([i]) * MiB for i in range(SIZE // MiB))


# ---------------------------------------------------------------------- partial.py


async def test_partial_release_while_a_copy_waits_writes_through_a_closed_fd(
    make_mount: MakeMount, tmp_path: os.PathLike[str]
) -> None:
    """rename of an open, still-arriving large file to a local-only name copies its
    content (_own_blob -> open_content -> partial.finished(), no node lock). If the last
    handle closes meanwhile, Partial.close() closes wfd and unlinks the file, but the
    waiting finished() starts a new stream on the closed Partial: it pwrite()s into
    whatever file now has that descriptor number, and the copy dup()s the closed
    OpenFile.fd. Wrong bytes in someone else's file and in the renamed file."""
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    root = await resolve(m.vfs, "")
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    freed = {f.fd, f.partial.wfd}
    renamed: list[BaseException | None] = []

    async def rename() -> None:
        try:
            await m.vfs.rename(root.ino, "big.bin", root.ino, "big.bin~", 0)
            renamed.append(None)
        except BaseException as e:
            renamed.append(e)
            raise

    victims: dict[int, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rename)
        await wait_until_async(lambda: len(remote.offsets) >= 1, 5, "the stream")
        await trio.sleep(0.05)  # the rename waits in partial.finished()
        await close(m.vfs, fh)  # the last handle goes while the copy waits
        # Other files opened now get the descriptor numbers just freed.
        spare = []
        while len(victims) < len(freed) and len(spare) < 64:
            p = os.path.join(tmp_path, f"victim{len(spare)}")
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
            spare.append(fd)
            if fd in freed:
                victims[fd] = p
        remote.gate.set()
        with trio.move_on_after(10):
            while not renamed:
                await trio.sleep(0.05)
        for fd in spare:
            os.close(fd)
    assert renamed == [None]
    copy = await read_file(m.vfs, "big.bin~")
    sizes = {p: os.path.getsize(p) for p in victims.values()}
    assert (sizes, len(copy), copy == data) == (dict.fromkeys(sizes, 0), SIZE, True)


async def test_partial_mismatch_is_not_served_nor_copied(make_mount: MakeMount) -> None:
    """semantics.md: 'a mismatch is logged, never cached, and fails later reads with
    EIO'. But Streams.completed() sets partial.error while partial.complete stays True,
    and read() only consults the Partial when not complete: later reads serve the bad
    bytes. Worse, a write copies them (finished() returns when the bytes are there,
    before the check even ran) and the flusher uploads them over the good file."""
    remote = Streaming(corrupt=True)
    data = content()
    remote.put("big.bin", data)
    remote.gate.set()
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDWR)
    first = await read_all(m.vfs, fh)  # arriving: served unchecked (documented)
    assert first != data
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    await wait_until_async(lambda: f.partial is None or f.partial.error, 5, "the check")
    later: object
    try:
        later = await m.vfs.read(fh, 3 * MiB, 10)  # 'fails later reads with EIO'
    except (FsError, OSError) as e:
        later = e
    try:
        await m.vfs.write(fh, 0, b"x")  # a copy of known-bad bytes
    except (FsError, OSError):
        pass
    await close(m.vfs, fh)
    await m.drain()
    uploaded_ok = remote.files()["big.bin"][1:] == data[1:]
    assert (isinstance(later, bytes), uploaded_ok) == (False, True), (
        f"later read served: {later!r}; remote now holds the corrupt bytes: {not uploaded_ok}"
    )


async def test_partial_four_readers_far_apart_make_progress(make_mount: MakeMount) -> None:
    """MAX_STREAMS = 3: a 4th reader's _start cancels the oldest stream; its reader wakes
    (no stream near its gap) and starts again, cancelling the next oldest, and so on.
    With any latency before a stream's first byte no stream ever delivers: a livelock
    that opens and cancels requests as fast as the loop runs."""
    remote = Streaming(latency=0.02)
    data = content()
    remote.put("big.bin", data)
    remote.gate.set()
    m = await make_mount(remote)
    fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    got: dict[int, bytes] = {}

    async def reader(off: int) -> None:
        got[off] = await m.vfs.read(fh, off, 4096)

    with trio.move_on_after(3):
        async with trio.open_nursery() as nursery:
            for off in (0, 20 * MiB, 40 * MiB, 60 * MiB):
                nursery.start_soon(reader, off)
    requests = len(remote.offsets)
    await close(m.vfs, fh)
    assert got == {off: data[off : off + 4096] for off in (0, 20 * MiB, 40 * MiB, 60 * MiB)}, (
        f"{requests} stream requests, reads done: {sorted(got)}"
    )


async def test_partial_stream_oserror_fails_the_read_not_the_mount(
    make_mount: MakeMount,
) -> None:
    """A stream's pwrite() into the sparse file failing (ENOSPC on the cache disk) is an
    OSError, not a RemoteError: _run does not catch it, it ends Streams.run's nursery
    (in a real mount: the mount's main nursery, so the whole mount), and the reader
    waiting for those bytes is never woken."""
    remote = Streaming()
    remote.fail_with = OSError(errno.ENOSPC, "No space left on device")
    remote.put("big.bin", content())
    m = await make_mount(remote, flusher=False)
    crashed: list[BaseException] = []

    async def host() -> None:
        try:
            await m.vfs.streams.run()
        except Exception as e:
            crashed.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(host)
        await wait_until_async(lambda: m.vfs.streams.running, 5, "the streams task")
        fh, _ = await open_path(m.vfs, "big.bin", os.O_RDONLY)
        outcome: list[object] = []
        with trio.move_on_after(3):
            try:
                await m.vfs.read(fh, 0, 10)
                outcome.append("read")
            except (FsError, OSError) as e:
                outcome.append(e)
        await m.vfs.release(fh)
        nursery.cancel_scope.cancel()
    assert (crashed, bool(outcome)) == ([], True), f"streams task died: {crashed!r}; read hung"


async def test_partial_error_on_one_stream_leaks_the_completed_temp_file(
    make_mount: MakeMount,
) -> None:
    """Two streams; the far one fails (partial.error set, its reader gets EIO), the
    near one completes the file. _run commits only when `self.error is None`, so the
    complete file is never handed to the cache; release() keeps complete files (for
    the commit that never comes): a 64 MiB file left in cache/tmp, outside the limit."""

    class FarFails(Streaming):
        async def read(self, path: str, dest: BinaryIO, **kw: object) -> Fetched:  # type: ignore[override]
            if kw.get("offset"):
                self.offsets.append(int(kw["offset"]))  # type: ignore[call-overload]
                await trio.lowlevel.checkpoint()
                from repomount.remotes.base import Unavailable

                raise Unavailable("reset by peer")
            return await super().read(path, dest, **kw)  # type: ignore[arg-type]

    remote = FarFails()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    with pytest.raises(Exception):  # noqa: B017
        await m.vfs.read(fh, 40 * MiB, 10)
    remote.gate.set()
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    partial = f.partial
    await wait_until_async(lambda: partial.complete, 10, "the stream from 0 to complete")
    await close(m.vfs, fh)
    await trio.sleep(0.5)
    assert list(m.vfs.cache.tmp_dir.iterdir()) == [] or m.vfs.cache.has("big.bin", node.version), (
        "a complete download neither cached nor removed"
    )
    assert list(m.vfs.cache.tmp_dir.iterdir()) == []


# ---------------------------------------------------------------------- prefetch.py


async def test_prefetch_oserror_does_not_end_the_prefetch_task(make_mount: MakeMount) -> None:
    """_read catches RemoteError only; an OSError (ENOSPC writing a cache temp file) or
    the ExceptionGroup read_many's nursery wraps it in ends Prefetcher.run, which in a
    real mount is a child of the mount's main nursery: the whole mount goes down."""

    class DiskFull(MemRemote):
        async def read_many(self, paths, new_file, got, *, transfers=4):  # type: ignore[no-untyped-def]
            await trio.lowlevel.checkpoint()
            raise OSError(errno.ENOSPC, "No space left on device")

    remote = DiskFull()
    remote.put("a", b"a")
    m = await make_mount(remote, flusher=False)
    crashed: list[BaseException] = []

    async def host() -> None:
        try:
            await m.vfs.prefetch.run()
        except Exception as e:
            crashed.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(host)
        m.vfs.prefetch.queue(1, [Candidate("a", sha(b"a"), 1)])
        await trio.sleep(0.3)
        nursery.cancel_scope.cancel()
    assert not crashed, f"the prefetch task died: {crashed!r}"


# ---------------------------------------------------------------------- listing / feed


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


async def test_partial_truncating_open_while_a_read_waits_writes_through_a_closed_fd(
    make_mount: MakeMount, tmp_path: os.PathLike[str]
) -> None:
    """The plain version of the first finding: process A reads a large file still
    arriving (read() waits in partial.ready()); process B opens it with O_TRUNC
    (`> big.bin`). adopt_spool -> _drop_file releases the Partial (its only user is the
    shared OpenFile): wfd closed, file unlinked, streams cancelled. A's ready() wakes,
    sees its gap with no stream and starts one on the closed Partial: the remote's
    bytes are pwrite()n into whatever file reuses wfd's number."""
    remote = Streaming()
    data = content()
    remote.put("big.bin", data)
    m = await make_mount(remote)
    fh, node = await open_path(m.vfs, "big.bin", os.O_RDONLY)
    assert await m.vfs.read(fh, 0, 10) == data[:10]
    f = m.vfs.files.get(node.ino)
    assert f is not None and f.partial is not None
    freed = f.partial.wfd
    victim = os.path.join(tmp_path, "victim")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.vfs.read, fh, 5 * MiB, 10)  # waits behind the gated stream
        await trio.sleep(0.05)
        wfh, _ = await open_path(m.vfs, "big.bin", os.O_WRONLY | os.O_TRUNC)
        spare = []
        while True:  # another file gets the number just freed
            fd = os.open(f"{victim}{len(spare)}", os.O_RDWR | os.O_CREAT, 0o600)
            spare.append(fd)
            if fd == freed or len(spare) > 64:
                break
        await trio.sleep(0.5)
        sizes = [os.fstat(fd).st_size for fd in spare]
        for fd in spare:
            os.close(fd)
        await close(m.vfs, wfh)
    await close(m.vfs, fh)
    assert sizes == [0] * len(sizes), "remote bytes written into an unrelated file"


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
