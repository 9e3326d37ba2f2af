"""Second reading (not a change under review: in 8df1c4d too): a truncating open of a
file another handle holds open with offline edits (a sparse spool) empties the spool
but keeps its edits' record, whose base bytes come back when they are laid over it."""

from __future__ import annotations

import os

from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import MakeMount, close, listdir, open_path


async def test_a_truncating_open_over_offline_edits_empties_the_file(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote
) -> None:
    mem.put("log", b"line 1\n")
    m = await make_mount(faulty)
    assert await listdir(m.vfs, "") == ["log"]  # listed, never read
    faulty.fail_rate(1.0)  # the remote is away
    a, _ = await open_path(m.vfs, "log", os.O_RDWR)  # edits over a version never seen
    b, _ = await open_path(m.vfs, "log", os.O_WRONLY | os.O_TRUNC)
    await m.vfs.write(b, 0, b"new\n")
    await close(m.vfs, b)
    await close(m.vfs, a)
    faulty.heal()
    assert await m.drain() == []
    assert mem.files() == {"log": b"new\n"}
