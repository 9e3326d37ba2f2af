"""Nodes of clean, unreferenced subtrees go once their listing expired: memory follows
what is in use, not what was ever listed."""

from __future__ import annotations

import gc
import os
import tracemalloc
from dataclasses import replace
from pathlib import Path

import repomount
from repomount.remotes.base import Listing
from support.memremote import MemRemote
from support.vfsutil import ROOT, MakeMount, listdir, open_path, read_file

PER_FILE_MAX = 580  # (533 when written)
# What the vfs allocates, and the listings' strings (not the in-memory remote's own, nor
# the interpreter's tables, which grow in steps).
OURS = str(Path(repomount.__file__).parent / "*")


async def test_expired_unreferenced_subtree_is_dropped_and_relisted(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    for i in range(50):
        mem.put(f"big/sub{i % 5}/f{i}", b"x%d\n" % i)
    m = await make_mount(metadata_ttl=0.0)
    vfs = m.vfs
    for d in range(5):
        assert len(await listdir(vfs, f"big/sub{d}")) == 10
    before = len(vfs.inodes)
    assert before > 55
    # The kernel forgets everything it looked up (what listdir's lookups counted).
    vfs.forget([(n.ino, n.lookups) for n in vfs.inodes.nodes() if n.ino != ROOT])
    dropped = vfs.sweep()
    assert dropped >= 55 and len(vfs.inodes) == before - dropped
    # Listed again on demand, content intact.
    assert await read_file(vfs, "big/sub3/f8") == b"x8\n"
    assert len(await listdir(vfs, "big/sub3")) == 10


async def test_referenced_or_pending_nodes_stay(make_mount: MakeMount, mem: MemRemote) -> None:
    mem.put("d/a", b"a\n")
    mem.put("d/b", b"b\n")
    m = await make_mount(metadata_ttl=0.0, flush_delay=3600.0, max_flush_window=3600.0)
    vfs = m.vfs
    fh, node = await open_path(vfs, "d/a", os.O_RDONLY)  # open: referenced
    vfs.forget([(n.ino, n.lookups) for n in vfs.inodes.nodes() if n.ino != ROOT])
    vfs.sweep()
    assert vfs.inodes.get(node.ino) is node and node.attached
    await vfs.release(fh)
    # A pending change below keeps its directory too.
    wfh, wnode = await open_path(vfs, "d/b", os.O_WRONLY | os.O_TRUNC)
    await vfs.write(wfh, 0, b"B\n")
    await vfs.flush(wfh)
    await vfs.release(wfh)
    vfs.forget([(n.ino, n.lookups) for n in vfs.inodes.nodes() if n.ino != ROOT])
    vfs.sweep()
    assert vfs.inodes.get(wnode.ino) is wnode and wnode.attached
    assert await read_file(vfs, "d/b") == b"B\n"


async def test_per_inode_locks_are_kept_only_while_in_use(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """A walk that opens every file of a large tree keeps no lock per file afterwards
    (100,000 of them were about 23 MiB)."""
    for i in range(200):
        mem.put(f"d{i % 4}/f{i}", b"%d\n" % i)
    m = await make_mount()
    for i in range(200):
        assert await read_file(m.vfs, f"d{i % 4}/f{i}") == b"%d\n" % i
    assert await listdir(m.vfs, "d1") == sorted(f"f{i}" for i in range(1, 200, 4))
    assert m.vfs.node_locks == {} and m.vfs.dir_locks == {}


class Decoding(MemRemote):
    """Listings made of new strings, as a remote that decodes an answer makes them (the
    in-memory remote hands out the ones it keeps)."""

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        got = await super().list_tree(path, recursive=recursive)
        entries = [replace(e, path=_new(e.path), version=_new(e.version)) for e in got.entries]
        return replace(got, entries=entries)


def _new(s: str | None) -> str | None:
    return None if s is None else (s + " ")[:-1]


async def test_a_listed_and_read_file_costs_a_bounded_number_of_bytes(
    make_mount: MakeMount,
) -> None:
    """What the mount keeps per file of a large repo once `find` listed it and `git
    status` read it: the node, its name and version, and its content cache entry. At
    100,000 files every 100 bytes here is 10 MiB of the mount's RSS (target 150 MB).
    (It was 758: each node kept a second copy of its path, a table beside the
    inodes the version of the kernel's pages, and the content cache an index entry.)"""
    n = 4_000
    remote = Decoding()
    for i in range(n):
        remote.put(f"d{i // 400}/f{i:05}", b"%d\n" % i)
    m = await make_mount(remote)
    await listdir(m.vfs, "d0")  # (the tree's listing, and the first allocations, before)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(n):
            assert await read_file(m.vfs, f"d{i // 400}/f{i:05}") == b"%d\n" % i
        gc.collect()
        ours = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, OURS), tracemalloc.Filter(True, __file__)]
        )
        per_file = sum(s.size for s in ours.statistics("filename")) / n
    finally:
        tracemalloc.stop()
    assert per_file < PER_FILE_MAX, f"{per_file:.0f} bytes per file read"
