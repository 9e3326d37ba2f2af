"""Changes an earlier run left in the journal, shown in the tree.

A new mount replays the journal before serving; what it cannot send (the remote refuses
it, a conflict held under `--on-conflict fail`, a replay that ran out of time) stays
pending, with no node: the nodes of the run that made those changes are gone. Listings
skip every name a pending change touches (the change decides what is there), so without
this such a name would vanish from the tree: a file's local version unreachable, a new
directory missing. Here the names they make under a directory get nodes of their own,
built from the journal: a write shows its pending content, a symlink its target, a mkdir
an empty directory (holding what the journal puts below it).
"""

from __future__ import annotations

import logging
import os
import time

from repomount.remotes.base import Expect
from repomount.vfs.nodes import Node, child_path
from repomount.vfs.records import Record
from repomount.vfs.state import VfsState

log = logging.getLogger(__name__)


def lay_leftovers(state: VfsState, d: Node, leftover: set[int]) -> None:
    """Give the names the `leftover` records make directly under `d` (a directory with
    children loaded) nodes, where they have none. Records no longer pending leave the
    set as a side effect."""
    gone = [i for i in leftover if state.journal.get(i) is None]
    leftover.difference_update(gone)
    if not leftover or d.children is None:
        return
    prefix = d.path + "/" if d.path else ""
    names: set[str] = set()
    for i in leftover:
        rec = state.journal.get(i)
        assert rec is not None
        for p in rec.paths():
            if p.startswith(prefix):
                names.add(p[len(prefix) :].split("/", 1)[0])
    for name in sorted(names):
        if name not in d.children:
            _lay(state, d, name, leftover)


def _lay(state: VfsState, d: Node, name: str, leftover: set[int]) -> None:
    path = child_path(d, name)
    if not state.journal.touches(path):
        # Only changes below it: a directory the remote does not list (it would have a
        # node by now), made by one of them.
        _directory(state, d, name, leftover)
        return
    if not state.journal.exists_after(path):
        return
    rec = state.journal.naming(path)[-1]
    if rec.op == "write" and rec.path == path and rec.blob is not None:
        _file(state, d, name, rec)
    elif rec.op == "symlink" and rec.path == path and rec.target is not None:
        node = state.inodes.new_node(
            d, name, "symlink", target=rec.target, base=rec.expect, **_owner(state)
        )
        state.attrs.lay_over(node)
    elif rec.op == "mkdir" and rec.path == path:
        _directory(state, d, name, leftover)
    else:  # e.g. the target of a pending rename: shown once it is sent
        log.warning("%s: a pending %s from an earlier run is not shown until sent", path, rec.op)


def _file(state: VfsState, d: Node, name: str, rec: Record) -> None:
    assert rec.blob is not None
    try:
        st = os.stat(state.journal.blob_path(rec.blob))
    except FileNotFoundError:
        return  # (set aside at the next flush)
    node = state.inodes.new_node(
        d,
        name,
        "file",
        size=st.st_size,
        base=rec.expect,
        on_remote=rec.expect != Expect.ABSENT,
        mode=rec.mode if rec.mode is not None else 0o644,
        mtime_ns=rec.mtime_ns if rec.mtime_ns is not None else st.st_mtime_ns,
        **_owner(state),
    )
    state.overlay.set_pending_blob(node.ino, rec.blob)
    state.attrs.lay_over(node)


def _directory(state: VfsState, d: Node, name: str, leftover: set[int]) -> None:
    node = state.inodes.new_node(
        d, name, "dir", on_remote=False, mtime_ns=time.time_ns(), mode=0o755, **_owner(state)
    )
    state.attrs.lay_over(node)
    lay_leftovers(state, node, leftover)


def _owner(state: VfsState) -> dict[str, int]:
    return {"uid": state.config.uid, "gid": state.config.gid}
