"""The harness itself: the in-memory remote and the mount helpers behave as intended
(so a failure elsewhere in this tier is the vfs's, not the harness's)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from repomount.remotes.base import (
    Aborted,
    Applied,
    Conflict,
    Conflicted,
    Delete,
    Expect,
    ExpectT,
    Failed,
    NotFound,
    Rename,
    Unavailable,
    Write,
)
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.util import sha
from support.vfsutil import MakeMount, VfsMount, listdir, read_file, write_file


def _write(tmp_path: Path, path: str, data: bytes, expect: ExpectT) -> Write:
    src = tmp_path / f"blob-{sha(data)[:8]}"
    src.write_bytes(data)
    return Write(path, src, len(data), sha(data), expect, key=os.urandom(4).hex())


async def test_memremote_versions_conditions_and_atomicity(tmp_path: Path) -> None:
    r = MemRemote()
    v1 = r.put("d/f", b"one")
    assert v1 == sha(b"one") and r.head == "1" and r.dirs() == {"d"}
    ok = await r.apply(
        [_write(tmp_path, "d/f", b"two", v1), _write(tmp_path, "g", b"x", Expect.ABSENT)]
    )
    assert ok.outcomes == [Applied(sha(b"two")), Applied(sha(b"x"))] and ok.head == "2"
    bad = await r.apply([_write(tmp_path, "g", b"y", Expect.ABSENT), Delete("d/f", sha(b"two"))])
    assert bad.outcomes[0] == Conflicted(sha(b"x"))
    assert isinstance(bad.outcomes[1], Failed) and isinstance(bad.outcomes[1].error, Aborted)
    assert r.files() == {"d/f": b"two", "g": b"x"} and r.head == "2"
    missing = await r.apply([Delete("nope"), Delete("g", Expect.ANY)])
    assert isinstance(missing.outcomes[0], Failed) and isinstance(
        missing.outcomes[0].error, NotFound
    )
    moved = await r.apply([Rename("d", "e", Expect.ANY, expect_to=Expect.ABSENT)])
    assert isinstance(moved.outcomes[0], Applied) and r.files() == {"e/f": b"two", "g": b"x"}
    with pytest.raises(Conflict):
        await r.read("g", io.BytesIO(), version=v1)
    with pytest.raises(NotFound):
        await r.list_tree("g")
    assert [e.path for e in (await r.list_tree("")).entries] == ["e", "g"]


async def test_faulty_remote_lost_answer_still_applies(tmp_path: Path) -> None:
    r = MemRemote()
    f = FaultyRemote(r)
    f.fail_next(1, kind="lost")
    with pytest.raises(Unavailable):
        await f.apply([_write(tmp_path, "a", b"1", Expect.ABSENT)])
    assert r.files() == {"a": b"1"}
    f.fail_next(2, methods=("list_tree",))
    for _ in range(2):
        with pytest.raises(Unavailable):
            await f.list_tree("")
    assert (await f.list_tree("")).entries[0].path == "a"


async def test_mount_round_trip_and_restart(make_mount: MakeMount, mem: MemRemote) -> None:
    mem.put("d/old", b"remote\n")
    m: VfsMount = await make_mount()
    assert await read_file(m.vfs, "d/old") == b"remote\n"
    await write_file(m.vfs, "d/new", b"local\n")
    assert await m.drain() == []
    assert mem.files() == {"d/old": b"remote\n", "d/new": b"local\n"}
    await m.stop_flusher()
    await write_file(m.vfs, "later", b"journaled\n")
    await m.restart()  # replays the journal before serving
    assert mem.files()["later"] == b"journaled\n"
    assert sorted(await listdir(m.vfs, "")) == ["d", "later"]
