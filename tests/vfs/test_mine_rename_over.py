"""Under `mine`: a file written here, then renamed over another file that another
client changed meanwhile. The plan sends the content at the new name, expecting there
what the rename record expected; the conflict set the write's own records to expect
anything but not the rename's, so every round met the same conflict again at once (a
two-mount random-operations run logged it 31,452 times in ten minutes)."""

from __future__ import annotations

from repomount.vfs.conflicts import Policy
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, append, read_file, resolve


async def test_a_write_renamed_over_a_file_changed_elsewhere_overwrites_it_once(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    mem.put("a", b"base a\n")
    mem.put("b", b"base b\n")
    m = await make_mount(on_conflict=Policy.MINE, **HELD)
    await append(m.vfs, "a", b"ours\n")
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "a", root.ino, "b", 0)
    mem.put("b", b"theirs\n")  # another client, meanwhile
    before = mem.requests["apply"]
    assert await m.drain(5) == []
    assert mem.requests["apply"] - before <= 4  # (was: a request per round, for ever)
    assert mem.files() == {"b": b"base a\nours\n"}
    assert await read_file(m.vfs, "b") == b"base a\nours\n"
