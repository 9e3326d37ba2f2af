"""A change the remote answers as a replay (its idempotency record: the first answer,
whose head may be older than heads seen since). Found by a walkthrough: a file saved
while the server stalled, the mount unmounted with the change kept, the stalled commit
landed, another writer changed the file, and the remount replayed the change: the file
was gone from the mount (ENOENT) until some other change reached the feed."""

from __future__ import annotations

import os

from support.faultyremote import FaultyRemote, listing_in_flight
from support.memremote import MemRemote
from support.vfsutil import MakeMount, close, listdir, read_file, resolve, write_file


async def test_a_change_replayed_after_a_restart_stays_in_the_tree(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    m = await make_mount(faulty)
    await write_file(m.vfs, "doc.txt", b"v1\n")
    await write_file(m.vfs, "other.txt", b"keep\n")
    assert await m.drain() == []
    await m.stop_flusher()
    await write_file(m.vfs, "doc.txt", b"local edit\n")
    faulty.fail_next(1, kind="lost")
    await m.vfs.flusher.round()  # lands, its answer lost: still journaled
    landed = mem.head
    assert mem.files()["doc.txt"] == b"local edit\n"
    mem.put("doc.txt", b"other edit\n")  # another writer, after it
    now = mem.head

    await m.restart()  # sends it again: the first answer (its older head) comes back
    assert mem.head == now and m.vfs.journal.records() == []
    assert m.vfs.gens.made_by_us(landed)
    assert m.vfs.flusher.head == now  # (not back to the replay's head)
    assert sorted(await listdir(m.vfs, "")) == ["doc.txt", "other.txt"]
    assert await read_file(m.vfs, "doc.txt") == b"other edit\n"


async def test_a_replay_of_this_run_still_wins_over_a_listing_in_flight(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """A change of this run whose answer was lost may have landed while a listing was
    in flight: its replay still takes a generation, so that listing does not roll the
    file back."""
    mem.put("f", b"v1\n")
    m = await make_mount(faulty, flusher=False)
    assert await read_file(m.vfs, "f") == b"v1\n"
    node = await resolve(m.vfs, "f")
    async with listing_in_flight(faulty, m.vfs) as slow:  # the listing has v1 in it
        fh, _ = await m.vfs.open(node.ino, os.O_WRONLY | os.O_TRUNC)
        await m.vfs.write(fh, 0, b"v2 ours\n")
        await close(m.vfs, fh)
        faulty.fail_next(1, kind="lost")
        await m.vfs.flusher.round()  # lands, its answer lost
        m.vfs.journal.retry_now()
        await m.vfs.flusher.round()  # the replay
        assert m.vfs.journal.records() == []
        slow.release()  # the old listing lands now
    assert await read_file(m.vfs, "f") == b"v2 ours\n"


async def test_a_replay_never_moves_the_head_back(
    make_mount: MakeMount, mem: MemRemote, faulty: FaultyRemote
) -> None:
    """Within a run: a lost answer, then other commits, then the replay's answer with
    its old head. Later commits name the flusher's head as their base."""
    m = await make_mount(faulty, flusher=False)
    await write_file(m.vfs, "a", b"1")
    faulty.fail_next(1, kind="lost")
    await m.vfs.flusher.round()  # lands, its answer lost; "a" backs off
    mem.put("b", b"theirs")
    await write_file(m.vfs, "c", b"3")
    await m.vfs.flusher.round()  # "c" alone
    assert m.vfs.flusher.head == mem.head
    m.vfs.journal.retry_now()
    await m.vfs.flusher.round()  # "a" again: a replay
    assert m.vfs.journal.records() == []
    assert mem.files() == {"a": b"1", "b": b"theirs", "c": b"3"}
    assert m.vfs.flusher.head == mem.head
