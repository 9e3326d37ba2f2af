"""A descriptor open while its file's content lost a conflict hears it at its next
fsync (ESTALE), once, even when the close that was the commit point was another's: a
child process's inherited copy, closed at its exec, sends the same FLUSH. The program
then fsyncs and got 0, never told its bytes went to the conflict copy (found by a
two-mount random run). As Linux reports a writeback error to every file open."""

from __future__ import annotations

import errno
import os

import pytest

from repomount.vfs.conflicts import Policy
from repomount.vfs.errors import FsError
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, listdir, open_path


@pytest.mark.parametrize("policy", [Policy.KEEP_BOTH, Policy.THEIRS])
async def test_an_fsync_after_another_descriptors_close_lost_a_conflict_is_estale_once(
    make_mount: MakeMount, mem: MemRemote, policy: Policy
) -> None:
    mem.put("doc.txt", b"base\n")
    m = await make_mount(on_conflict=policy, **HELD)
    fh, _ = await open_path(m.vfs, "doc.txt", os.O_RDWR)
    other, _ = await open_path(m.vfs, "doc.txt", os.O_RDONLY)  # open before: told too
    await m.vfs.write(fh, 0, b"mine\n")
    await m.vfs.flush(fh)  # a child's copy of the descriptor, closed at its exec
    mem.put("doc.txt", b"theirs\n")  # another client, meanwhile
    assert await m.drain() == []
    assert mem.files()["doc.txt"] == b"theirs\n"
    for h in (fh, other):
        with pytest.raises(FsError) as e:
            await m.vfs.fsync(h)
        assert e.value.errno == errno.ESTALE
        await m.vfs.fsync(h)  # told once
    later, _ = await open_path(m.vfs, "doc.txt", os.O_RDONLY)
    await m.vfs.fsync(later)  # opened after: the name is theirs, nothing lost here
    for h in (fh, other, later):
        await m.vfs.release(h)
    if policy == Policy.KEEP_BOTH:
        assert len(await listdir(m.vfs, "")) == 2
