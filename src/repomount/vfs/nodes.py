"""The local view of the repo's namespace: a tree of nodes, and the inode table.

A remote repo has no inode numbers, so each path gets one when first seen. A node stays
in the tree while its name exists; a node that lost its name (unlink, rename-over, remote
delete) stays in the inode table until the kernel forgets it, so open files keep working.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Literal

from repomount import paths
from repomount.remotes.base import Expect, ExpectT

ROOT_INO = 1
# The mode bits a node takes (chmod, create, mkdir): those a remote keeps. None keeps
# setuid, setgid or sticky (remotes/validate.py drops them from listings), so a mode
# with them would show until a remount, then lose them: they are dropped at once, as
# chmod drops setgid for a group its caller is not in.
MODE_BITS = 0o777
# What a listing shows where the remote gives no mode (remotes keep no directory modes).
DEFAULT_DIR_MODE = 0o755
DEFAULT_FILE_MODE = 0o644


def default_mode(kind: str) -> int:
    return DEFAULT_DIR_MODE if kind == "dir" else DEFAULT_FILE_MODE


HERE = ""  # Node.fetch_path: the remote keeps the content at the node's own path

Kind = Literal["file", "dir", "symlink"]


@dataclass(eq=False, slots=True)  # slots: a 100,000-file tree is 100,000 of these
class Node:
    ino: int
    name: str
    parent: Node | None
    kind: Kind
    size: int = 0
    mode: int = 0o644  # permission bits only
    mtime_ns: int = field(default_factory=time.time_ns)
    atime_ns: int | None = None  # None: the same as mtime until set, or mtime moves here
    ctime_ns: int = -1  # -1: the same as mtime until an attribute or the name changes
    # Owner, for the mount's lifetime (the remotes keep none): the mounting user, or
    # whoever made the node through an allow_other mount, or chown; 'nobody' for git
    # metadata from the remote (trust.py).
    uid: int = 0
    gid: int = 0
    # The remote version of the node's clean content and where the remote keeps it
    # (`source`): HERE for the node's own path, else the old path while a rename of it
    # is pending. None: nothing remote to read. (HERE, not the path spelled out: a
    # second copy of every path costs 7 MiB per 100,000 files.)
    version: str | None = None
    fetch_path: str | None = None
    # The version whose pages the kernel holds for this inode (None: none known), to
    # decide keep_cache on open (fileio.py). On the node, not in a table beside the
    # inodes (7 MiB per 100,000 files read): it goes when the kernel forgets the inode,
    # as the pages do.
    paged: str | None = None
    # What the remote holds at this node's path before our pending changes land: the
    # precondition every change journaled for the path carries. Expect.ABSENT for a
    # name the remote does not have.
    base: ExpectT = Expect.ABSENT
    # Whether the remote has (or our journal will give it) this name; for directories.
    on_remote: bool = False
    children: dict[str, Node] | None = None  # dirs only; None until first listed
    subdirs: int = 0  # directories among `children` (kept by InodeTable: nlink is hot)
    lookups: int = 0  # the kernel's lookup count
    open_count: int = 0  # open file handles
    attached: bool = True  # False once the name was removed from the tree
    # A local-only file (an editor's swap file, say): its content stays on this disk,
    # in a journal blob that no journal row sends anywhere.
    local: bool = False
    target: str | None = None  # a symlink's target
    # A link from the remote that leaves the mount, shown as a read-only file holding
    # its target's text (trust.py): the kernel must not follow it.
    link_as_file: bool = False
    # A link the remote made (a listing brought it), not one made here: where a rename
    # takes it, it leaves the mount or not by its path there (trust.links_leaving).
    link_from_remote: bool = False
    # A listing of the remote showed it (where listings leave some files out:
    # Capabilities.complete_listing; listing.py)
    listed: bool = False

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @mtime.setter
    def mtime(self, seconds: float) -> None:
        """A change made here (a write, a truncate, an entry of a directory): the access
        time does not move with it, as on a local disk; one that followed mtime stays."""
        self.keep_atime()
        self.mtime_ns = int(seconds * 1e9)

    def keep_atime(self) -> None:
        if self.atime_ns is None:
            self.atime_ns = self.mtime_ns

    @property
    def ctime(self) -> float:
        return self.ctime_ns / 1e9

    @ctime.setter
    def ctime(self, seconds: float) -> None:
        self.ctime_ns = int(seconds * 1e9)

    @property
    def nlink(self) -> int:
        """Files: 1, or 0 once unlinked (still open). Directories: 2 plus one per
        subdirectory once listed; 1 before ("unknown", which find and fts honour: a
        wrong 2 would tell them there is nothing below to descend into); 0 once
        removed (still open, or a working directory)."""
        if not self.attached:
            return 0
        if not self.is_dir:
            return 1
        if self.children is None:
            return 1
        return 2 + self.subdirs

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def path(self) -> str:
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    @property
    def source(self) -> str:
        """Where the remote keeps this node's clean content (`version`)."""
        return self.fetch_path or self.path

    def pin_source(self) -> None:
        """Spell out where the remote keeps the content (HERE: this node's path), before
        the path changes or stops being this node's."""
        if self.fetch_path == HERE:
            self.fetch_path = self.path

    def read_from(self, where: str) -> None:
        """The remote keeps this node's clean content at `where` (from now on). HERE
        only while the node has its name: a node kept without one must not follow a
        later rename of its old parent."""
        self.fetch_path = HERE if self.attached and where == self.path else where

    @property
    def st_mode(self) -> int:
        if self.link_as_file:
            return stat.S_IFREG | 0o444
        return _KIND_BITS[self.kind] | (self.mode & 0o7777)


_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}
# What a node's inode has of its own, not carried to a new inode (InodeTable.renewed).
_PER_INODE = frozenset(
    {"ino", "name", "parent", "kind", "paged", "children", "subdirs", "lookups", "open_count",
     "attached"}
)  # fmt: skip


def _pin_sources(top: Node) -> None:
    """`pin_source` for `top` and each node below it, before their paths change."""
    top.pin_source()
    for n in below(top):
        n.pin_source()


def below(d: Node) -> Iterator[Node]:
    """Every node below `d` (those its children know of), depth first."""
    stack = list((d.children or {}).values())
    while stack:
        yield (n := stack.pop())
        stack.extend((n.children or {}).values())


def child_path(parent: Node, name: str) -> str:
    return paths.joined(parent.path, name)


class InodeTable:
    """ino -> node for every node the kernel may still ask about."""

    def __init__(self) -> None:
        self.root = Node(ROOT_INO, "", None, "dir", mode=0o755, on_remote=True)
        self._nodes: dict[int, Node] = {ROOT_INO: self.root}
        self._next_ino = ROOT_INO + 1

    def __len__(self) -> int:
        return len(self._nodes)

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def get(self, ino: int) -> Node | None:
        return self._nodes.get(ino)

    def new_node(self, parent: Node, name: str, kind: Kind, **attrs: object) -> Node:
        """Create a node and link it into `parent` (replacing nothing: the caller detaches
        any previous holder of the name first)."""
        node = Node(self._next_ino, name, parent, kind, **attrs)  # type: ignore[arg-type]
        self._next_ino += 1
        if kind == "dir" and node.children is None and not node.on_remote:
            node.children = {}  # a directory made here starts known-empty
        self._nodes[node.ino] = node
        assert parent.children is not None
        parent.children[name] = node
        parent.subdirs += node.is_dir
        return node

    def renewed(self, node: Node, **changes: object) -> Node:
        """`node`'s name and attributes (with `changes`) on a new inode, `node` detached:
        the kernel cannot change an inode's type. The caller invalidates the name."""
        parent = node.parent
        assert parent is not None and node.children is None
        kept = {f.name: getattr(node, f.name) for f in fields(Node) if f.name not in _PER_INODE}
        self.detach(node)
        return self.new_node(parent, node.name, node.kind, **{**kept, **changes})

    def detach(self, node: Node) -> None:
        """Remove `node` (and its subtree) from the namespace. Inode entries survive while
        the kernel still holds lookups or handles are open."""
        siblings = node.parent.children if node.parent is not None else None
        if siblings is not None and siblings.get(node.name) is node:
            del siblings[node.name]
            node.parent.subdirs -= node.is_dir  # type: ignore[union-attr]
        stack = [node]
        while stack:
            n = stack.pop()
            n.attached = False
            if n.children:
                stack.extend(n.children.values())
            self._maybe_drop(n)

    def drop_subtree(self, node: Node) -> list[int]:
        """Forget an unreferenced subtree whose parent let go of it (see sweep); the
        inode numbers that went."""
        gone = []
        stack = [node]
        while stack:
            n = stack.pop()
            n.attached = False
            if n.children:
                stack.extend(n.children.values())
            self._maybe_drop(n)
            if n.ino not in self._nodes:
                gone.append(n.ino)
        return gone

    def move(self, node: Node, new_parent: Node, new_name: str) -> None:
        assert node.parent is not None and node.parent.children is not None
        assert new_parent.children is not None
        _pin_sources(node)  # (the remote keeps their contents where they were)
        if node.parent.children.get(node.name) is node:
            del node.parent.children[node.name]
            node.parent.subdirs -= node.is_dir
        node.parent = new_parent
        node.name = new_name
        replaced = new_parent.children.get(new_name)  # (callers detach it first)
        if replaced is not None:
            new_parent.subdirs -= replaced.is_dir
        new_parent.children[new_name] = node
        new_parent.subdirs += node.is_dir

    def forget(self, ino: int, count: int) -> None:
        node = self._nodes.get(ino)
        if node is None:
            return
        node.lookups = max(0, node.lookups - count)
        self._maybe_drop(node)

    def released(self, node: Node) -> None:
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if not node.attached and node.lookups == 0 and node.open_count == 0:
            self._nodes.pop(node.ino, None)
        elif not node.attached:
            # Kept without a name (open, or looked up): where it reads from must not
            # follow a later rename of its old parent.
            node.pin_source()
