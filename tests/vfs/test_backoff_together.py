"""The records of one change back off together. A save made while the remote is away
(`sed -i`: a temporary file written, then renamed over the file) failed as one write;
each of its records then drew its own jittered retry time, so once the remote was back
the temporary file's write was due before its rename and went alone: the temporary
name reached the remote, and when the rename then met a change made elsewhere, the
edit stayed in a stray `sedXXXXXX` file while the conflict note said only "the
remote's version was kept". Found with the server stopped for a while under vim and
`sed -i`."""

from __future__ import annotations

import itertools

import pytest

from repomount.vfs import outcomes
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import HELD, MakeMount, read_file, resolve, write_file


async def test_a_save_that_backed_off_never_sends_its_temporary_name(
    make_mount: MakeMount, faulty: FaultyRemote, mem: MemRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem.put("a.txt", b"alpha\n")
    m = await make_mount(faulty, flusher=False, **HELD)
    assert await read_file(m.vfs, "a.txt") == b"alpha\n"
    await write_file(m.vfs, "sedAb12Cd", b"alpha1\n")
    root = await resolve(m.vfs, "")
    await m.vfs.rename(root.ino, "sedAb12Cd", root.ino, "a.txt", 0)
    # Each draw of the jitter a little later than the one before.
    draws = itertools.count()
    monkeypatch.setattr(outcomes.random, "uniform", lambda lo, hi: lo + next(draws))
    faulty.fail_next(1, methods=("apply",))
    await m.vfs.flusher.round()  # the remote is away: both records back off
    mem.put("a.txt", b"alpha from elsewhere\n")  # meanwhile, another writer
    due = min(r.next_try for r in m.vfs.journal.records())
    monkeypatch.setattr(m.vfs.flusher, "_now", lambda: due + 0.001)
    await m.vfs.flusher.round()  # what is due once the first retry time came
    assert not any(p.startswith("sed") for p in mem.files()), mem.files()
    monkeypatch.setattr(m.vfs.flusher, "_now", lambda: due + 3600)
    assert await m.drain() == []
    files = mem.files()
    assert not any(p.startswith("sed") for p in files), files
    assert files.pop("a.txt") == b"alpha from elsewhere\n"
    [(copy, mine)] = files.items()
    assert copy.startswith("a.conflict-") and mine == b"alpha1\n"
