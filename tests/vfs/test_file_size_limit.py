"""A remote that says how large a file it takes (RepoInfo.max_file_size): writes and
truncates past that are refused with EFBIG where they are made, as a local filesystem
refuses a file over its largest size, instead of a close that succeeds and a change the
remote refuses (413) later."""

from __future__ import annotations

import errno
import os

import pytest

from repomount.vfs.errors import FsError
from support.memremote import MemRemote
from support.vfsutil import MakeMount, close, open_path, read_file, write_file

LIMIT = 1000


@pytest.fixture
def mem() -> MemRemote:
    return MemRemote(max_file_size=LIMIT)


async def test_a_write_past_the_limit_is_cut_short_then_refused(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(local_only=("*.tmp",))
    fh, _ = await open_path(m.vfs, "f.bin", os.O_WRONLY | os.O_CREAT)
    assert await m.vfs.write(fh, 0, b"a" * 600) == 600
    assert await m.vfs.write(fh, 600, b"b" * 600) == 400  # up to the limit, as ext4 does
    with pytest.raises(FsError) as refused:
        await m.vfs.write(fh, 1000, b"c")
    assert refused.value.errno == errno.EFBIG
    with pytest.raises(FsError) as beyond:
        await m.vfs.write(fh, 5000, b"c")  # (a hole then a byte: as far past it)
    assert beyond.value.errno == errno.EFBIG
    await close(m.vfs, fh)
    assert await m.drain() == []
    assert mem.files() == {"f.bin": b"a" * 600 + b"b" * 400}  # what was taken, sent


async def test_truncate_past_the_limit_is_refused_and_changes_nothing(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount()
    node = await write_file(m.vfs, "f", b"data")
    for size in (LIMIT + 1, 1 << 50):
        with pytest.raises(FsError) as refused:
            await m.vfs.setattr(node.ino, None, size=size)
        assert refused.value.errno == errno.EFBIG
    assert m.vfs.getattr(node.ino).size == 4
    await m.vfs.setattr(node.ino, None, size=LIMIT)  # at the limit: taken
    assert m.vfs.getattr(node.ino).size == LIMIT
    assert await m.drain() == []
    assert mem.files() == {"f": b"data" + bytes(LIMIT - 4)}


async def test_a_local_only_file_has_no_limit(make_mount: MakeMount, mem: MemRemote) -> None:
    """It is never sent: only the local disk bounds it."""
    m = await make_mount(local_only=("*.tmp",))
    big = os.urandom(3 * LIMIT)
    node = await write_file(m.vfs, "scratch.tmp", big)
    await m.vfs.setattr(node.ino, None, size=10 * LIMIT)
    assert await read_file(m.vfs, "scratch.tmp") == big + bytes(7 * LIMIT)
    assert await m.drain() == []
    assert mem.files() == {}


async def test_a_remote_that_says_no_limit_takes_any_size(make_mount: MakeMount) -> None:
    unlimited = MemRemote()
    m = await make_mount(unlimited)
    node = await write_file(m.vfs, "f", b"x" * (3 * LIMIT))
    await m.vfs.setattr(node.ino, None, size=10 * LIMIT)
    assert await m.drain() == []
    assert unlimited.files() == {"f": b"x" * (3 * LIMIT) + bytes(7 * LIMIT)}
