"""Known data-loss bugs of the write path, each as the ext4-like behaviour it must have.

Every test here fails on the vfs as of commit da3c950 (see each docstring for how) and
should pass once the write-path rewrite lands. They use only the public Vfs API.
"""

from __future__ import annotations

import errno
import os

import pytest
import trio

from repomount.vfs.errors import FsError
from support.faultyremote import FaultyRemote, listing_in_flight
from support.memremote import MemRemote
from support.util import wait_until_async
from support.vfsutil import (
    HELD,
    ROOT,
    MakeMount,
    VfsMount,
    append,
    close,
    listdir,
    open_path,
    read_all,
    read_file,
    resolve,
    walk,
    write_file,
)

# The flusher never runs on its own (only drain/fsync make it): "before the flusher ran".


# ---------------------------------------------------------------- (a) (b) (h) reopen


async def test_a_append_right_after_close(make_mount: MakeMount, mem: MemRemote) -> None:
    """`echo hi > f; echo ho >> f` before the upload. At da3c950 the reopened file's
    new spool starts empty (a never-uploaded file counts as having no content), so the
    result is b"\\0\\0\\0ho\\n"."""
    m = await make_mount(**HELD)
    await write_file(m.vfs, "f", b"hi\n")
    fh, node = await open_path(m.vfs, "f", os.O_WRONLY | os.O_APPEND)
    assert m.vfs.getattr(node.ino).size == 3
    assert await m.vfs.write(fh, 3, b"ho\n") == 3
    await close(m.vfs, fh)
    assert await read_file(m.vfs, "f") == b"hi\nho\n"
    assert await m.drain() == []
    assert mem.files() == {"f": b"hi\nho\n"}


async def test_a_append_helper_twice(make_mount: MakeMount, mem: MemRemote) -> None:
    """Three quick appends (a log file): every line survives."""
    m = await make_mount(**HELD)
    await write_file(m.vfs, "log", b"1\n")
    await append(m.vfs, "log", b"2\n")
    await append(m.vfs, "log", b"3\n")
    assert await read_file(m.vfs, "log") == b"1\n2\n3\n"
    assert await m.drain() == []
    assert mem.files() == {"log": b"1\n2\n3\n"}


async def test_b_h_truncate_extends_right_after_close(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`echo hello > t; truncate -s 20 t`. At da3c950: twenty NULs (the content is lost)."""
    m = await make_mount(**HELD)
    node = await write_file(m.vfs, "t", b"hello\n")
    got = await m.vfs.setattr(node.ino, None, size=20)
    assert got.size == 20
    want = b"hello\n" + b"\0" * 14
    assert await read_file(m.vfs, "t") == want
    assert await m.drain() == []
    assert mem.files() == {"t": want}


async def test_b_h_overwrite_first_byte_right_after_close(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`echo hello > t; python -c "open('t','r+').write('J')"`. At da3c950: b"J"."""
    m = await make_mount(**HELD)
    await write_file(m.vfs, "t", b"hello\n")
    fh, _ = await open_path(m.vfs, "t", os.O_RDWR)
    assert await m.vfs.read(fh, 0, 100) == b"hello\n"
    await m.vfs.write(fh, 0, b"J")
    await close(m.vfs, fh)
    assert await read_file(m.vfs, "t") == b"Jello\n"
    assert await m.drain() == []
    assert mem.files() == {"t": b"Jello\n"}


# ---------------------------------------------------------------- (c) (d) after upload


async def test_c_write_and_ftruncate_after_fsync(make_mount: MakeMount, mem: MemRemote) -> None:
    """write, fsync (waits for the upload), write again and ftruncate through the same
    handle. At da3c950 the second write fails ENOENT: the upload moved the spool's file
    into the content cache, and the next spool is copied from that vanished path."""
    m = await make_mount()
    fh, node = await open_path(m.vfs, "c.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    await m.vfs.write(fh, 0, b"abc")
    await m.vfs.fsync(fh)
    assert mem.files() == {"c.txt": b"abc"}
    await m.vfs.write(fh, 3, b"defgh")
    await m.vfs.setattr(node.ino, fh, size=6)
    assert await m.vfs.read(fh, 0, 100) == b"abcdef"
    await m.vfs.fsync(fh)
    await close(m.vfs, fh)
    assert await read_file(m.vfs, "c.txt") == b"abcdef"
    assert await m.drain() == []
    assert mem.files() == {"c.txt": b"abcdef"}


async def test_d_second_handle_writes_after_the_other_was_uploaded(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Two writable handles; h2 writes and closes; the flusher uploads it; then h1
    writes. At da3c950 h1's write fails ENOENT (same vanished spool file as in (c))."""
    mem.put("f", b"base\n")
    m = await make_mount()
    h1, node = await open_path(m.vfs, "f", os.O_WRONLY)
    h2, _ = await open_path(m.vfs, "f", os.O_RDWR)
    await m.vfs.write(h2, 0, b"two!\n")
    await close(m.vfs, h2)
    assert await m.drain() == []
    assert mem.files() == {"f": b"two!\n"}
    await m.vfs.write(h1, 5, b"one\n")
    await close(m.vfs, h1)
    assert await read_file(m.vfs, "f") == b"two!\none\n"
    assert await m.drain() == []
    assert mem.files() == {"f": b"two!\none\n"}
    assert m.vfs.getattr(node.ino).size == 9


# ---------------------------------------------------------------- (e) stale listing


async def test_e_stale_listing_does_not_roll_back_our_save(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """A listing that started before our save lands after it. At da3c950 the merge
    puts the old version back on the node: reads give the old bytes, and the next save
    is sent against the old version, conflicts, and makes a conflict copy."""
    mem.put("f", b"v1\n")
    m = await make_mount(faulty)
    node = await resolve(m.vfs, "f")
    assert await read_file(m.vfs, "f") == b"v1\n"  # cached at v1

    async with listing_in_flight(faulty, m.vfs) as slow:  # the listing has v1 in it
        fh, _ = await m.vfs.open(node.ino, os.O_WRONLY | os.O_TRUNC)
        await m.vfs.write(fh, 0, b"v2 ours\n")
        await close(m.vfs, fh)
        assert await m.drain() == []
        assert mem.files() == {"f": b"v2 ours\n"}
        slow.release()  # the old listing lands now

    assert await read_file(m.vfs, "f") == b"v2 ours\n"
    await write_file(m.vfs, "f", b"v3 ours\n")
    assert await m.drain() == []
    assert mem.files() == {"f": b"v3 ours\n"}  # no f.conflict-* copy


# ---------------------------------------------------------------- (f) backoff


async def test_f_backoff_survives_a_thousand_failures(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote, autojump_clock: trio.abc.Clock
) -> None:
    """A remote that stays down: the flusher keeps retrying, backing off, forever. At
    da3c950 the 1025th consecutive failure computes 0.5 * 2**1025 as a float and the
    flusher dies with OverflowError (nothing is ever sent again)."""
    m = await make_mount(faulty)
    faulty.fail_rate(1.0, methods=("apply",), retry_after=None)
    await write_file(m.vfs, "f", b"queued\n")
    # Each poll waits 60 s of virtual time: the backoff is at most 30 s.
    await wait_until_async(lambda: faulty.calls["apply"] >= 1100, 60, "1100 tries", interval=60)
    faulty.heal()
    assert await m.drain(120) == []
    assert mem.files() == {"f": b"queued\n"}


# ---------------------------------------------------------------- (g) rename re-validation


async def _consistent(m: VfsMount) -> dict[str, bytes]:
    """Every name the mount shows can be looked up and opened (no ENOENT)."""
    files, _ = await walk(m.vfs)
    return files


@pytest.mark.per_directory_listing
async def test_g_file_renamed_while_a_lagging_listing_drops_it(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """mv s/f d/f waits for the listing of d; meanwhile a lagging listing of s (from
    before f existed) is merged and detaches f. At da3c950 the rename goes on with the
    detached node: d/f shows, but a write to it is never journaled (its close sees a
    node without a name), so the new content is lost locally and remotely."""
    mem.mkdir("s")
    mem.put("d/y", b"y\n")
    old_s = mem.listing("s")  # a replica that has not seen f yet serves this
    mem.put("s/f", b"old\n")
    m = await make_mount(faulty, **HELD)
    assert await listdir(m.vfs, "s") == ["f"]
    s, d, f = [await resolve(m.vfs, p) for p in ("s", "d", "s/f")]

    slow_d = faulty.slow_listing("d")
    faulty.slow_listing("s", snapshot=old_s).release()
    renamed = True

    async def mv() -> None:
        nonlocal renamed
        try:
            await m.vfs.rename(s.ino, "f", d.ino, "f", 0)
        except FsError as e:
            assert e.errno == errno.ENOENT, e
            renamed = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mv)
        await slow_d.started.wait()  # the rename holds f and waits for d's listing
        await m.vfs.refresh_dirs(["s"])  # the lagging listing lands: no f in it
        slow_d.release()

    await _consistent(m)
    if not renamed:  # refusing is fine too; then nothing may have moved
        assert await m.drain() == []
        assert mem.files()["s/f"] == b"old\n"
        return
    fh, node = await open_path(m.vfs, "d/f", os.O_WRONLY | os.O_TRUNC)
    assert node.ino == f.ino
    await m.vfs.write(fh, 0, b"new\n")
    await close(m.vfs, fh)
    assert await read_file(m.vfs, "d/f") == b"new\n"
    assert await m.drain() == []
    assert mem.files() == {"d/y": b"y\n", "d/f": b"new\n"}


async def test_g_dir_renamed_while_another_client_removed_it(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """mv a b loads a's subtree; meanwhile another client removes a, and a listing of
    the root that no longer has it is merged. At da3c950 the rename goes on with the
    detached directory: b shows in readdir but b/x (never looked up, so dropped from
    the inode table with the detach) fails ENOENT on lookup+open."""
    mem.put("a/x", b"x\n")
    m = await make_mount(faulty, metadata_ttl=0.0, **HELD)  # every listing stale at once
    assert await listdir(m.vfs, "a") == ["x"]  # a's children are loaded (not fresh)

    slow_a = faulty.slow_listing("a")
    outcome: list[object] = []

    async def mv() -> None:
        try:
            await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
            outcome.append("renamed")
        except FsError as e:
            outcome.append(e.errno)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mv)
        await slow_a.started.wait()  # the rename holds a, listing it
        mem.remove("a")  # another client
        await m.vfs.refresh_dirs([""])  # a listing without a lands
        slow_a.release()

    assert outcome in (["renamed"], [errno.ENOENT])
    files = await _consistent(m)
    if outcome == ["renamed"]:
        assert files == {"b/x": b"x\n"}


@pytest.mark.per_directory_listing
async def test_g_dir_renamed_while_detached_before_its_first_listing(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """As above, but a was never listed. At da3c950 the rename dies on an internal
    `assert d.children is not None` (AssertionError: EIO to the caller), instead of
    ENOENT or a completed rename."""
    mem.put("a/x", b"x\n")
    m = await make_mount(faulty, **HELD)
    await resolve(m.vfs, "a")
    slow_a = faulty.slow_listing("a")
    outcome: list[object] = []

    async def mv() -> None:
        try:
            await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
            outcome.append("renamed")
        except FsError as e:
            outcome.append(e.errno)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(mv)
        await slow_a.started.wait()
        mem.remove("a")
        await m.vfs.refresh_dirs([""])
        slow_a.release()

    assert outcome in (["renamed"], [errno.ENOENT])
    await _consistent(m)


@pytest.mark.parametrize("nbytes", [0, 1, 4096 + 7])
async def test_reopen_for_read_right_after_close(
    make_mount: MakeMount, mem: MemRemote, nbytes: int
) -> None:
    """Sanity (passes today): reading back right after close, before any upload."""
    m = await make_mount(**HELD)
    data = bytes(range(256)) * (nbytes // 256) + b"z" * (nbytes % 256)
    await write_file(m.vfs, "r", data)
    fh, _ = await open_path(m.vfs, "r", os.O_RDONLY)
    assert await read_all(m.vfs, fh) == data
    await m.vfs.release(fh)
    assert await m.drain() == []
    assert mem.files() == {"r": data}


async def test_rename_lands_after_its_target_was_unlinked_and_made_again(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """mv d a; rm a; a new a, written and renamed to b; all sent in one round. Found by
    the random-operations test: the rename's acknowledgement gave the *new* a the
    renamed file's version, so its upload expected a file the same batch deleted
    (ESTALE, a conflict copy of the user's own work)."""
    mem.put("d", b"old d\n")
    m = await make_mount(**HELD)
    await m.vfs.rename(ROOT, "d", ROOT, "a", 0)
    await m.vfs.unlink(ROOT, "a")
    fh, _ = await open_path(m.vfs, "a", os.O_RDWR | os.O_CREAT)
    await m.vfs.write(fh, 0, b"new a\n")
    await m.vfs.flusher.round()  # the rename and the delete land; the new a is open
    assert mem.files() == {}
    await m.vfs.rename(ROOT, "a", ROOT, "b", 0)
    await m.vfs.write(fh, 6, b"more\n")
    await m.vfs.fsync(fh)
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"b": b"new a\nmore\n"}


async def test_rebase_follows_a_batch_that_replaced_the_file_twice(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Found by the model test: truncate a; mv b a (b open); write + fsync through b's
    descriptor; truncate a again. The fsync's batch wrote a, renamed b over it and wrote
    it again; the last write's base was rebased from the planned (stale) expectation,
    so the next truncate conflicted with our own upload (a conflict copy of our work)."""
    mem.put("a", b"")
    mem.put("b", b"C0\xdch")
    m = await make_mount(flusher=False)
    fh, _ = await open_path(m.vfs, "b", os.O_WRONLY | os.O_APPEND)
    a = await resolve(m.vfs, "a")
    await m.vfs.setattr(a.ino, None, size=4)
    await m.vfs.rename(ROOT, "b", ROOT, "a", 0)
    await m.vfs.write(fh, 4, b"\x00")
    await m.vfs.flush(fh)
    await m.vfs.flusher.round()
    assert mem.files() == {"a": b"C0\xdch\x00"}
    await close(m.vfs, fh)
    a = await resolve(m.vfs, "a")
    await m.vfs.setattr(a.ino, None, size=0)
    await m.restart()
    assert await m.drain() == []
    assert mem.files() == {"a": b""}


async def test_rebase_stops_at_a_delete(make_mount: MakeMount, mem: MemRemote) -> None:
    """Found by the long random-operations run: write b; rm b; mv d b, sent in three
    rounds. When the write of b landed it rebased every later record that expected b
    absent, the rename after the delete included, which then expected our first b
    there (a conflict, and a conflict copy of our own work)."""
    mem.put("d", b"d\n")
    m = await make_mount(flusher=False)
    await write_file(m.vfs, "b", b"first b\n")
    await m.vfs.unlink(ROOT, "b")
    await m.vfs.rename(ROOT, "d", ROOT, "b", 0)
    write_b, delete_b, rename_d = m.vfs.journal.records()
    assert (write_b.op, delete_b.op, rename_d.op) == ("write", "delete", "rename")
    await m.vfs.flusher.round([write_b])
    await m.vfs.flusher.round([m.vfs.journal.records()[0]])  # the delete
    assert await m.drain() == []
    assert mem.files() == {"b": b"d\n"}


async def test_a_listing_of_a_name_is_not_merged_into_a_new_directory_there(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """Found by the long model run: mv b c; mkdir b; a listing of "b" (the old b, with
    b/a) lands: b/a showed in the new, empty b."""
    mem.mkdir("b/a")
    m = await make_mount(faulty, **HELD)
    assert await listdir(m.vfs, "b") == ["a"]
    old_b = mem.listing("b")
    await m.vfs.rename(ROOT, "b", ROOT, "c", 0)
    await m.vfs.mkdir(ROOT, "b", 0o755)
    slow = faulty.slow_listing("b", snapshot=old_b)
    slow.release()
    await m.vfs.refresh_dirs(["b"])
    faulty.disarm(slow)
    assert await listdir(m.vfs, "b") == []
    assert await listdir(m.vfs, "c") == ["a"]


async def test_a_file_in_a_renamed_directory_is_known_under_its_new_path(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Found by the long model run: a file written in d, then mv d c, then mv c/a c/b
    and rm c/b, all before any upload. Its journaled write names d/a, so c/a looked
    never sent: the rename and the unlink were not journaled, and the remote kept the
    file (as c/a) after the final sync."""
    m = await make_mount(**HELD)
    await m.vfs.mkdir(ROOT, "d", 0o755)
    await write_file(m.vfs, "d/a", b"x\n")
    await m.vfs.rename(ROOT, "d", ROOT, "c", 0)
    c = await resolve(m.vfs, "c")
    await m.vfs.rename(c.ino, "a", c.ino, "b", 0)
    await m.vfs.unlink(c.ino, "b")
    assert await m.drain() == []
    assert mem.files() == {}
    assert await listdir(m.vfs, "c") == []
