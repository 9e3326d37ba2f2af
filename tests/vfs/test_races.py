"""Races found by a second reading of the vfs rewrite, each pinned at the vfs tier (each
failed before its fix: the comment on its assertion says how)."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Sequence
from functools import partial

import pytest
import trio

from repomount.remotes.base import ApplyResult, Change, RemoteChange
from repomount.vfs.core import Vfs
from repomount.vfs.errors import FsError
from repomount.vfs.watcher import shows
from support.gatedremote import GatedRemote
from support.memremote import MemRemote
from support.vfsutil import (
    HELD,
    ROOT,
    MakeMount,
    close,
    listdir,
    open_path,
    read_file,
    resolve,
    write_file,
)


async def test_chmod_while_its_write_is_in_flight_is_lost(make_mount: MakeMount) -> None:
    """write f; close; the flusher sends the write; chmod 755 f meanwhile updates the
    in-flight record's mode; the write lands with the old mode, the record is completed,
    the chmod never reaches the remote (and the next listing reverts it locally)."""
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    node = await write_file(m.vfs, "f", b"x")
    async with gated.holding(m.drain):
        await m.vfs.setattr(node.ino, None, mode=0o755)
    assert await m.drain() == []
    assert m.vfs.getattr(node.ino).mode == 0o755
    assert gated.items["f"].mode & 0o777 == 0o755  # was: 0o644 on the remote


async def test_rename_to_local_name_races_a_close(make_mount: MakeMount, mem: MemRemote) -> None:
    """rename(f, f~) needs a blob of its own for f (_own_blob copies in a thread); a
    write+close of f meanwhile journals newer content; _own_blob then sets its stale
    copy as the file's pending content: f~ reads the old bytes, the new ones are gone."""
    mem.put("f", b"old")
    m = await make_mount(**HELD)
    await resolve(m.vfs, "f")
    started, go, real = _slow_blob_copies(m.vfs)
    async with trio.open_nursery() as n:
        n.start_soon(m.vfs.rename, ROOT, "f", ROOT, "f~", 0)
        assert await trio.to_thread.run_sync(started.wait, 10), "the copy did not start"
        m.vfs.overlay.new_blob_from = real  # type: ignore[method-assign]
        await write_file(m.vfs, "f", b"new", os.O_WRONLY | os.O_TRUNC)
        go.set()
    assert await read_file(m.vfs, "f~") == b"new"  # was: b"old"


async def test_directory_renamed_twice_before_upload(make_mount: MakeMount, mem: MemRemote) -> None:
    """mv d e; mv e g (before the first is sent): after both land, a clean file below
    keeps fetch_path d/x (_rename_landed finds no node at e for a directory, and
    _move_fetch_paths(e -> g) matches nothing), so open() of g/x is ENOENT until the
    directory is listed again (--metadata-ttl)."""
    mem.put("d/x", b"data")
    m = await make_mount(**HELD)
    assert await listdir(m.vfs, "d") == ["x"]
    await m.vfs.rename(ROOT, "d", ROOT, "e", 0)
    await m.vfs.rename(ROOT, "e", ROOT, "g", 0)
    assert await m.drain() == []
    assert mem.files() == {"g/x": b"data"}
    assert await read_file(m.vfs, "g/x") == b"data"  # was: FsError ENOENT


async def test_long_open_writer_overwrites_a_remote_change(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """A descriptor kept open for writing: write, fsync (lands); another client changes
    the file; a listing merges it (base := theirs, the frozen spool still ours); the next
    write copies our old content and is sent expecting theirs: no conflict, their bytes
    are gone (semantics.md: 'neither side's bytes are lost')."""
    m = await make_mount()
    fh, _ = await open_path(m.vfs, "log", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"1\n")
    await m.vfs.fsync(fh)
    mem.put("log", b"theirs\n")
    await m.vfs.refresh_dirs([""])
    await m.vfs.write(fh, 2, b"2\n")
    await close(m.vfs, fh)
    assert await m.drain() == []
    files = mem.files()
    assert any(b"theirs" in v for v in files.values()), files  # was: {'log': b'1\n2\n'}


class NoDeleteRemote(MemRemote):
    """Like Terminal Use: no single-file delete or rename."""

    import dataclasses as _dc

    capabilities = _dc.replace(MemRemote.capabilities, delete=False, rename=False)


async def test_refused_rename_to_local_name_leaves_a_stray_blob(make_mount: MakeMount) -> None:
    """On a remote without delete (Terminal Use), vim's backup rename f -> f~ is EPERM
    (as documented), but _own_blob already gave f a pending blob no journal row sends:
    f is 'busy' from then on (listings skip it), so a change made elsewhere never shows,
    and a full copy of the file stays in blobs/ with no row naming it."""
    remote = NoDeleteRemote()
    remote.put("f", b"old")
    m = await make_mount(remote, **HELD)
    await resolve(m.vfs, "f")
    for _ in range(3):
        try:
            await m.vfs.rename(ROOT, "f", ROOT, "f~", 0)
        except FsError as e:
            assert e.errno == errno.EPERM
    stray = list(m.vfs.journal.blob_dir.iterdir())
    remote.put("f", b"theirs")
    await m.vfs.refresh_dirs([""])
    assert (stray, await read_file(m.vfs, "f")) == ([], b"theirs")  # was: a blob, b"old"


async def test_file_sent_under_a_directory_renamed_in_the_same_round(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`mkdir b; echo x > b/f; mv b d` all pending, sent in one round; then `mv d/f g`.
    Found by the model test: the write lands as b/f, but the file is named d/f by then,
    so its base stayed "absent"; the later `mv d/f g` then counted the file as never
    sent and journaled nothing: the mount showed g, the remote kept d/f."""
    m = await make_mount(**HELD)
    await m.vfs.mkdir(ROOT, "b", 0o755)
    await write_file(m.vfs, "b/f", b"x")
    await m.vfs.rename(ROOT, "b", ROOT, "d", 0)
    assert await m.drain() == []
    assert mem.files() == {"d/f": b"x"}
    d = await resolve(m.vfs, "d")
    await m.vfs.rename(d.ino, "f", ROOT, "g", 0)
    assert await m.drain() == []
    assert mem.files() == {"g": b"x"}  # was: {"d/f": b"x"}


async def test_later_write_under_the_new_directory_name_is_rebased(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`echo x > b/f; mv b d; echo y > d/f` pending; the first write and the rename
    land in one round, the second write in a later one. The second was journaled
    chained to the first ("absent"); rebasing must follow the directory's rename, or
    it goes out expecting nothing at d/f and conflicts with our own file."""
    gated = GatedRemote()
    m = await make_mount(gated, **HELD)
    await m.vfs.mkdir(ROOT, "b", 0o755)
    await write_file(m.vfs, "b/f", b"x")
    await m.vfs.rename(ROOT, "b", ROOT, "d", 0)
    async with gated.holding(m.drain):
        await write_file(m.vfs, "d/f", b"y")  # journaled while the round is in flight
    assert await m.drain() == []
    assert gated.files() == {"d/f": b"y"}
    assert await read_file(m.vfs, "d/f") == b"y"
    assert not [p for p in await listdir(m.vfs, "d") if "conflict" in p]


async def test_fsync_after_the_conflict_copy_already_landed(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """The flusher may settle a conflict and send its copy before a waiting fsync looks
    again. wait_for then found the original gone, added the copy's id, and waited for
    a progress signal that never came: fsync gave EIO after its full timeout (a 20 s
    flake of test_long_open_writer_... under load) instead of ESTALE at once."""
    mem.put("log", b"base\n")
    m = await make_mount(flusher=False, **HELD)
    await write_file(m.vfs, "log", b"mine\n")
    ids = m.vfs.flusher.ids_for("log")
    mem.put("log", b"theirs\n")
    await m.vfs.flusher.round()  # the conflict: a copy of ours is journaled
    await m.vfs.flusher.round()  # ... and lands
    assert [p for p in mem.files() if "conflict" in p]
    with trio.fail_after(5):
        with pytest.raises(FsError) as e:
            await m.vfs.flusher.wait_for(ids, timeout=10)  # was: EIO after 10 s
    assert e.value.errno == errno.ESTALE


async def test_new_file_renamed_inside_a_renamed_directory(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`mkdir a; mv a b; echo > b/f; rm b/f; mv b e; echo f > e/f; mv e/f e/g`, sent in
    one batch. The plan used to carry "delete e/f" (unchecked, after the earlier ops of
    e/f): the remote answered NotFound, which aborted the batch, and the rename record
    was completed anyway, so the content went out as e/f (found by the long model run,
    with `rmdir` of the directory failing "not empty" afterwards)."""
    m = await make_mount(**HELD)
    await m.vfs.mkdir(ROOT, "a", 0o755)
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    await write_file(m.vfs, "b/f", b"old")
    b = await resolve(m.vfs, "b")
    await m.vfs.unlink(b.ino, "f")
    await m.vfs.rename(ROOT, "b", ROOT, "e", 0)
    await write_file(m.vfs, "e/f", b"f")
    e = await resolve(m.vfs, "e")
    await m.vfs.rename(e.ino, "f", e.ino, "g", 0)
    assert await m.drain() == []
    assert mem.files() == {"e/g": b"f"}  # was: {"e/f": b"f"}
    assert mem.dirs() == {"e"}


async def test_rename_there_and_back_with_an_older_inode_of_the_name_around(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Another client writes `a`, deletes it, writes it again (a new inode here; the
    old one stays in the table while the kernel holds it); then `mv a b; mv b a`.
    When the renames landed, the search for "the file read from a" found the old
    inode first and relabelled its cached content as the new version: `a` then read
    back the deleted file's bytes (found by the long model run)."""
    m = await make_mount(**HELD)
    mem.put("a", b"\0")
    await m.vfs.refresh_dirs([""])
    old = await resolve(m.vfs, "a")
    old.lookups += 1  # the kernel still holds it
    assert await read_file(m.vfs, "a") == b"\0"  # its content is in the cache
    mem.remove("a")
    await m.vfs.refresh_dirs([""])
    mem.put("a", b"")
    await m.vfs.refresh_dirs([""])
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    await m.vfs.rename(ROOT, "b", ROOT, "a", 0)
    assert await m.drain() == []
    assert mem.files() == {"a": b""}
    assert await read_file(m.vfs, "a") == b""  # was: b"\0"


# ------------------------------------------------ found by a second reading (this round)


async def test_rename_chain_over_an_existing_file(make_mount: MakeMount, mem: MemRemote) -> None:
    """`mv a b; mv b c; mv c d` over an existing b, in one round: the record b->c was
    rebased to a's version after a->b landed; matching the planned version left d
    reading from b, which no longer exists."""
    mem.put("a", b"AAAA")
    mem.put("b", b"BB")
    m = await make_mount(**HELD)
    await resolve(m.vfs, "a")
    await resolve(m.vfs, "b")
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    await m.vfs.rename(ROOT, "b", ROOT, "c", 0)
    await m.vfs.rename(ROOT, "c", ROOT, "d", 0)
    assert await m.drain() == []
    assert mem.files() == {"d": b"AAAA"}
    assert (await resolve(m.vfs, "d")).source == "d"  # was: "b" (reads: NotFound)
    assert await read_file(m.vfs, "d") == b"AAAA"


async def test_old_name_changed_remotely_while_the_file_moves(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`echo new > a; mv a b` while another client changes a: the delete of a
    conflicts (theirs wins: their a stays) and our content must still land as b
    (it went out under a and ended as a conflict copy, b never reached the remote)."""
    mem.put("a", b"old")
    m = await make_mount(**HELD)
    await resolve(m.vfs, "a")
    await write_file(m.vfs, "a", b"new")
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    mem.put("a", b"theirs")
    assert await m.drain() == []
    assert mem.files() == {"a": b"theirs", "b": b"new"}
    await m.vfs.refresh_dirs([""])
    assert await read_file(m.vfs, "b") == b"new"


class _FailWritesOnce(MemRemote):
    """A remote without atomic batches whose next write fails with a 503."""

    import dataclasses as _dc

    capabilities = _dc.replace(MemRemote.capabilities, atomic_batch=False)
    fail_writes = 0

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        from repomount.remotes.base import Unavailable, Write

        if self.fail_writes and any(isinstance(c, Write) for c in changes):
            self.fail_writes -= 1
            await trio.lowlevel.checkpoint()
            raise Unavailable("503 for the write", status=503)
        return await super().apply(changes, base=base)


async def test_old_name_deleted_before_the_moved_content_lands(make_mount: MakeMount) -> None:
    """`echo new > a; mv a b; mv b c` on a remote without atomic batches, the write
    failing once: the delete of a landed first and completed the rename a->b, so the
    content went out under a (as a conflict) and c never appeared."""
    remote = _FailWritesOnce()
    remote.put("a", b"old")
    m = await make_mount(remote, **HELD)
    m.vfs.flusher.config.backoff_base = 0.01
    m.vfs.flusher.config.backoff_max = 0.02
    await resolve(m.vfs, "a")
    await write_file(m.vfs, "a", b"new")
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    await m.vfs.rename(ROOT, "b", ROOT, "c", 0)
    remote.fail_writes = 1
    assert await m.drain() == []
    assert remote.files() == {"c": b"new"}
    assert m.vfs.flusher.conflicts == []


async def test_fsync_reports_a_conflict_as_estale_itself(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """fsync waits for the upload while it syncs locally, in a nursery: the conflict
    must leave as FsError(ESTALE), not inside an exception group (which the fuse layer
    can only call EIO)."""
    mem.put("doc", b"base\n")
    m = await make_mount()
    fh, _ = await open_path(m.vfs, "doc", os.O_RDWR | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"mine\n")
    mem.put("doc", b"theirs\n")
    with trio.fail_after(30):
        with pytest.raises(FsError) as e:
            await m.vfs.fsync(fh)
    assert e.value.errno == errno.ESTALE
    await close(m.vfs, fh)


async def test_the_feed_bringing_back_an_older_save_of_ours_needs_no_listing(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Saving one file again and again (an editor, E1): the change feed reports each
    commit, often after the next save landed. Each was taken for someone else's
    change and cost a re-listing of the directory (71 listings in 200 saves at 20 ms)."""
    m = await make_mount()
    await write_file(m.vfs, "f", b"one\n")
    assert await m.drain() == []
    first = (await resolve(m.vfs, "f")).version
    await write_file(m.vfs, "f", b"two\n")
    assert await m.drain() == []
    assert first is not None and (await resolve(m.vfs, "f")).version != first
    assert shows(m.vfs, RemoteChange("f", "write", first))
    assert not shows(m.vfs, RemoteChange("f", "write", "another-clients-version"))


@pytest.mark.parametrize("changed_elsewhere", [False, True])
async def test_a_listing_while_chmod_copies_the_content(
    make_mount: MakeMount, mem: MemRemote, changed_elsewhere: bool
) -> None:
    """The randomized exerciser: chmod 444 f showed 0644 at once. chmod of a settled
    file copies its content into a new blob (a worker thread) before it journals the
    new mode; a listing meanwhile put the remote's mode back on the file, and the row
    then carried that. Nor may the listing move the file's base meanwhile: the copy is
    of the content it had, and another client's change must meet it as a conflict."""
    mem.put("f", b"old")
    m = await make_mount(**HELD)
    node = await resolve(m.vfs, "f")
    assert await read_file(m.vfs, "f") == b"old"
    started, go, _ = _slow_blob_copies(m.vfs)
    async with trio.open_nursery() as n:
        n.start_soon(partial(m.vfs.setattr, node.ino, None, mode=0o444))
        assert await trio.to_thread.run_sync(started.wait, 10), "the copy did not start"
        if changed_elsewhere:
            mem.put("f", b"theirs")
        m.vfs.expire(ROOT)
        assert await listdir(m.vfs, "") == ["f"]  # (listed while the copy waits)
        go.set()
    assert m.vfs.getattr(node.ino).mode & 0o777 == 0o444  # was: 0o644
    assert await m.drain() == []
    if changed_elsewhere:  # (theirs kept, ours beside it: never overwritten)
        assert mem.files()["f"] == b"theirs"
        assert [c.path for c in m.vfs.flusher.conflicts] == ["f"]
    else:
        assert mem.items["f"].mode is not None and mem.items["f"].mode & 0o777 == 0o444


def _slow_blob_copies(
    vfs: Vfs,
) -> tuple[threading.Event, threading.Event, Callable[[int], str]]:
    """Blob copies (worker thread) wait, once done, until `go` is set; `started` is set
    when one is. Returns (started, go, the real copy, to put back)."""
    started, go = threading.Event(), threading.Event()
    real = vfs.overlay.new_blob_from

    def slow_copy(fd: int) -> str:
        name = real(fd)
        started.set()
        go.wait(10)
        return name

    vfs.overlay.new_blob_from = slow_copy  # type: ignore[method-assign]
    return started, go, real
