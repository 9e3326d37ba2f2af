"""What repo content may make this machine do (docs/semantics.md, "Trust").

Repos are written by other people and by agents, so what the remote holds is data, never
code. Two kinds of content would act on the machine that mounts it, and by default
neither does:

- git metadata: a `.git` directory (at any depth) or gitdir file holds config
  (`core.fsmonitor`, `core.pager`, aliases) and hooks that git runs, and so does a
  bare repository, a directory holding `HEAD`, `objects/` and `refs/` under any name
  (what git itself takes for a git directory). Everything at or below one that the
  remote made or changed is shown owned by `nobody`, and so is every one above it:
  git's ownership check (safe.directory) then refuses the repository, as root too
  (git compares with the effective uid, or SUDO_UID under sudo). One made through the
  mount is its maker's for the session, until the remote changes something in it.
  Owners kept by chown are not laid over `.git` paths: provenance decides.
- symbolic links that leave the mount: the kernel follows a link for writes as for
  reads, so a link from the remote whose target is absolute or climbs out of the mount
  is shown as a read-only regular file holding the target's text (git's
  `core.symlinks=false`). Links made through the mount are followed for the session.

`--trust-remote-code` and `--follow-remote-symlinks` turn each off. This is how the
mount presents nodes; the remote keeps exactly what was written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from repomount.vfs.nodes import Node

NOBODY = 65534  # uid and gid of 'nobody' / 'nogroup'
GIT_DIR = ".git"


def in_git_dir(path: str) -> bool:
    """Whether `path` is a `.git` (directory or gitdir file) or lies below one."""
    return GIT_DIR in path and GIT_DIR in path.split("/")  # (the first test is cheap)


def leaves_mount(link_path: str, target: str) -> bool:
    """Whether the link at `link_path` (a repo path) may resolve outside the mount.

    Absolute targets do. A relative one is resolved from the link's directory: `..`
    may only lead (each climbs one real directory, and there must be one to climb);
    a `..` after a name counts as leaving, because where it lands depends on what the
    name is: a link to a shallower place (`here -> .`) takes `here/../x` out of the
    mount although, read as text, it stays inside."""
    if target.startswith("/"):
        return True
    depth = link_path.count("/")  # directories between the root and the link
    climbing = True
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part != "..":
            climbing = False
        elif not climbing:
            return True
        else:
            depth -= 1
            if depth < 0:
                return True
    return False


class _Kernel(Protocol):
    def inode(self, ino: int, attr_only: bool = False) -> None: ...


def looks_like_git_dir(d: Node) -> bool:
    """Whether git would take the directory `d` for a git directory: a bare repository,
    whatever its name (`HEAD`, `objects/` and `refs/` in it)."""
    children = d.children
    if not children or "HEAD" not in children:  # (most directories: one lookup)
        return False
    objects, refs = children.get("objects"), children.get("refs")
    return (
        children["HEAD"].kind in ("file", "symlink")
        and objects is not None and objects.is_dir
        and refs is not None and refs.is_dir
    )  # fmt: skip


def _is_git_dir(n: Node) -> bool:
    """A `.git`, or a directory git takes for one; never the mount's root (its owner is
    the mount's: nobody could write in it)."""
    return n.parent is not None and (n.name == GIT_DIR or looks_like_git_dir(n))


def _git_dirs_from(node: Node) -> Iterator[Node]:
    """`node` and its ancestors that are git directories."""
    n: Node | None = node
    while n is not None:
        if _is_git_dir(n):
            yield n
        n = n.parent


@dataclass(frozen=True)
class Trust:
    remote_code: bool = False  # --trust-remote-code
    remote_symlinks: bool = False  # --follow-remote-symlinks

    def guards_owner(self, path: str) -> bool:
        """Whether the owner at `path` is decided by where its content came from (and
        kept owners are not laid over it)."""
        return not self.remote_code and in_git_dir(path)

    def link_as_file(self, path: str, target: str | None) -> bool:
        """Whether a link the remote has at `path` is shown as a read-only file."""
        return not self.remote_symlinks and target is not None and leaves_mount(path, target)

    def links_leaving(self, top: Node) -> list[Node]:
        """The links from the remote at or below `top`, just moved (a rename of them or
        of a directory above), that leave the mount from where they are now but were
        shown as links: a remote link `a/b/c/d -> ../../..` stays inside, and after
        `mv a/b b` the same target climbs out. Links made here are followed anyway."""
        if self.remote_symlinks:
            return []
        found: list[Node] = []
        stack = [top]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif (
                n.kind == "symlink"
                and n.link_from_remote
                and not n.link_as_file
                and self.link_as_file(n.path, n.target)
            ):
                found.append(n)
        return found

    def from_remote(self, node: Node, path: str, kernel: _Kernel) -> None:
        """The remote made or changed `node` at `path` (a listing brought it): at or
        below a git directory, it and every git directory above it are nobody's now
        (and the kernel drops the owner it may have cached). A bare repository is known
        once its `refs` (listed after `HEAD` and `objects`) is in."""
        if self.remote_code:
            return
        gits = list(_git_dirs_from(node))
        if not gits:
            return
        node.uid = node.gid = NOBODY
        for d in gits:
            if (d.uid, d.gid) != (NOBODY, NOBODY):
                d.uid = d.gid = NOBODY
                kernel.inode(d.ino, attr_only=True)

    def kept_in_memory(self, root: Node) -> set[int]:
        """Nodes whose look depends on having been made here, which a re-listing would
        not know: a `.git` still the maker's, with all below it, and followed links
        that leave the mount. The sweep must not forget them."""
        if self.remote_code and self.remote_symlinks:
            return set()
        kept: set[int] = set()
        stack = [(root, False)]
        while stack:
            n, inside = stack.pop()
            inside = inside or (not self.remote_code and _is_git_dir(n) and n.uid != NOBODY)
            if inside or (
                not self.remote_symlinks
                and n.kind == "symlink"
                and not n.link_as_file
                and leaves_mount(n.path, n.target or "")
            ):
                kept.add(n.ino)
            stack.extend((c, inside) for c in (n.children or {}).values())
        return kept
