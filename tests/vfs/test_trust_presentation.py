"""Repo content is data, not code (issue 18 #1, #2), in-process: who a node belongs to
and what a link looks like depend on where they came from (vfs/trust.py).
tests/security/test_remote_content_trust.py replays the findings with git and a shell."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

import pytest

from repomount.remotes.base import Listing, Symlink
from repomount.vfs.errors import FsError
from repomount.vfs.trust import NOBODY
from support.memremote import MemRemote
from support.vfsutil import (
    ROOT,
    MakeMount,
    VfsMount,
    listdir,
    mkdirs,
    read_file,
    resolve,
    write_file,
)

ME = (os.getuid(), os.getgid())


async def owner(m: VfsMount, path: str) -> tuple[int, int]:
    node = await resolve(m.vfs, path)
    return node.uid, node.gid


def plant_git(mem: MemRemote) -> None:
    mem.put(".git/HEAD", b"ref: refs/heads/main\n")
    mem.put(".git/config", b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    mem.put(".git/hooks/pre-commit", b"#!/bin/sh\ntouch /tmp/pwned\n", mode=0o755)
    mem.put("sub/.git", b"gitdir: ../elsewhere\n")  # a gitdir link
    mem.put("src/main.py", b"print('hi')\n")


# ---------------------------------------------------------------------- git metadata


async def test_git_metadata_from_the_remote_belongs_to_nobody(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    plant_git(mem)
    m = await make_mount()
    for path in (".git", ".git/config", ".git/hooks", ".git/hooks/pre-commit", "sub/.git"):
        assert await owner(m, path) == (NOBODY, NOBODY), path
    for path in ("", "sub", "src", "src/main.py"):
        assert await owner(m, path) == ME, path
    assert (await resolve(m.vfs, ".git/hooks/pre-commit")).mode == 0o755  # (modes as they are)


async def test_trust_remote_code_shows_it_as_yours(make_mount: MakeMount, mem: MemRemote) -> None:
    plant_git(mem)
    m = await make_mount(trust_remote_code=True)
    for path in (".git", ".git/config", ".git/hooks/pre-commit", "sub/.git", "src"):
        assert await owner(m, path) == ME, path


async def test_a_git_dir_made_here_is_yours_until_the_remote_changes_it(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount()
    await mkdirs(m.vfs, "p/.git/hooks")
    await write_file(m.vfs, "p/.git/config", b"[core]\n")
    assert await m.drain() == []
    await m.vfs.refresh_dirs(["p", "p/.git", "p/.git/hooks"])  # our own upload, listed
    for path in ("p/.git", "p/.git/config", "p/.git/hooks"):
        assert await owner(m, path) == ME, path
    # Someone else adds a hook: it, and the .git above it, are nobody's now.
    mem.put("p/.git/hooks/post-checkout", b"#!/bin/sh\n", mode=0o755)
    await m.vfs.refresh_dirs(["p/.git/hooks"])
    assert await owner(m, "p/.git/hooks/post-checkout") == (NOBODY, NOBODY)
    assert await owner(m, "p/.git") == (NOBODY, NOBODY)
    assert await owner(m, "p/.git/config") == ME  # (what we wrote stays ours)
    assert await owner(m, "p") == ME


async def test_a_remote_change_to_a_file_in_our_git_dir_makes_it_nobodys(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount()
    await mkdirs(m.vfs, ".git")
    await write_file(m.vfs, ".git/config", b"[core]\n")
    assert await m.drain() == []
    mem.put(".git/config", b"[core]\n\tfsmonitor = touch /tmp/pwned\n")
    await m.vfs.refresh_dirs([".git"])
    assert await owner(m, ".git/config") == (NOBODY, NOBODY)
    assert await owner(m, ".git") == (NOBODY, NOBODY)


class DirsWithASize(MemRemote):
    """A remote whose listings give directories a size (as `ls -l` of a disk would)."""

    def listing(self, path: str, *, recursive: bool = False) -> Listing:
        got = super().listing(path, recursive=recursive)
        sized = [replace(e, size=4096) if e.kind == "dir" else e for e in got.entries]
        return replace(got, entries=sized)


async def test_a_listing_of_our_own_git_dir_changes_nothing(make_mount: MakeMount) -> None:
    """A directory's listed size is no change of what it holds."""
    m = await make_mount(DirsWithASize())
    await mkdirs(m.vfs, ".git/refs/heads")
    await write_file(m.vfs, ".git/refs/heads/main", b"0" * 40 + b"\n")
    assert await m.drain() == []
    await m.vfs.refresh_dirs(["", ".git", ".git/refs"])
    for path in (".git", ".git/refs", ".git/refs/heads"):
        assert await owner(m, path) == ME, path


@pytest.mark.parametrize("trusted", [False, True])
async def test_after_a_remount_a_git_dir_made_here_is_the_remotes(
    make_mount: MakeMount, trusted: bool
) -> None:
    """The mount cannot know what happened to it on the remote meanwhile. A maker other
    than the mounting user (allow_other) is kept, but not laid over git metadata unless
    trusted (today's behaviour)."""
    m = await make_mount(trust_remote_code=trusted)
    git = await m.vfs.mkdir(ROOT, ".git", 0o755, owner=(1000, 1000))
    fh, _ = await m.vfs.create(git.ino, "HEAD", 0o644, os.O_WRONLY | os.O_CREAT, owner=ME)
    await m.vfs.flush(fh)
    await m.vfs.release(fh)
    assert await owner(m, ".git") == (1000, 1000)
    assert await m.drain() == []
    await m.restart()
    if trusted:
        assert await owner(m, ".git") == (1000, 1000)
        assert await owner(m, ".git/HEAD") == ME
    else:
        assert await owner(m, ".git") == (NOBODY, NOBODY)
        assert await owner(m, ".git/HEAD") == (NOBODY, NOBODY)


async def test_the_sweep_keeps_a_git_dir_made_here(make_mount: MakeMount) -> None:
    """Forgotten and listed again, it would come back as the remote's."""
    m = await make_mount(metadata_ttl=0.0)
    await mkdirs(m.vfs, "p/.git/objects")
    await write_file(m.vfs, "p/.git/objects/ab", b"x")
    await write_file(m.vfs, "p/other", b"y")
    assert await m.drain() == []
    head = await resolve(m.vfs, "p/.git/objects/ab")
    m.vfs.forget([(n.ino, n.lookups) for n in m.vfs.inodes.nodes() if n.ino != ROOT])
    m.vfs.sweep()
    assert m.vfs.inodes.get(head.ino) is head and head.attached
    assert await owner(m, "p/.git") == ME


# ---------------------------------------------------------------------- symlinks


LINKS = {
    "abs": "/etc/hostname",
    "d/e/up": "../../../outside",
    "here": ".",
    "sneaky": "here/../outside",
    "d/e/ok": "../../src/a.txt",
}


def plant_links(mem: MemRemote) -> None:
    mem.put("src/a.txt", b"a\n")
    mem.apply_now([Symlink(p, t) for p, t in LINKS.items()])


async def test_a_link_from_the_remote_leaving_the_mount_is_a_read_only_file(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    plant_links(mem)
    m = await make_mount()
    for path in ("abs", "d/e/up", "sneaky"):
        node = await resolve(m.vfs, path)
        assert node.st_mode == stat.S_IFREG | 0o444, path
        assert node.size == len(LINKS[path])
        assert await read_file(m.vfs, path) == LINKS[path].encode()
        for flags in (os.O_WRONLY | os.O_APPEND, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
            with pytest.raises(FsError) as e:
                await m.vfs.open(node.ino, flags)
            assert e.value.errno == errno.EACCES
        with pytest.raises(FsError) as e:
            await m.vfs.setattr(node.ino, None, size=0)
        assert e.value.errno == errno.EACCES
        with pytest.raises(FsError) as e:
            m.vfs.readlink(node.ino)
        assert e.value.errno == errno.EINVAL
    for path in ("here", "d/e/ok"):  # inside the mount: links, followed
        node = await resolve(m.vfs, path)
        assert stat.S_ISLNK(node.st_mode) and m.vfs.readlink(node.ino) == LINKS[path]
    assert mem.items["abs"].kind == "symlink"  # (the remote keeps what it has)


async def test_follow_remote_symlinks_shows_them_as_links(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    plant_links(mem)
    m = await make_mount(follow_remote_symlinks=True)
    for path, target in LINKS.items():
        node = await resolve(m.vfs, path)
        assert stat.S_ISLNK(node.st_mode) and m.vfs.readlink(node.ino) == target


async def test_a_link_made_here_is_followed_for_the_session(make_mount: MakeMount) -> None:
    m = await make_mount(metadata_ttl=0.0)
    link = await m.vfs.symlink(ROOT, "mine", "/etc/hostname")
    assert await m.drain() == []
    await m.vfs.refresh_dirs([""])
    m.vfs.forget([(n.ino, n.lookups) for n in m.vfs.inodes.nodes() if n.ino != ROOT])
    m.vfs.sweep()  # (kept: a re-listing would show it as the remote's)
    assert m.vfs.inodes.get(link.ino) is link and stat.S_ISLNK(link.st_mode)
    assert m.vfs.readlink(link.ino) == "/etc/hostname"
    await m.restart()
    assert (await resolve(m.vfs, "mine")).st_mode == stat.S_IFREG | 0o444


async def test_a_link_the_remote_turns_outward_becomes_a_new_file(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """The kernel cannot change an inode's type: the name gets a new inode."""
    mem.apply_now([Symlink("l", "inside")])
    m = await make_mount()
    before = await resolve(m.vfs, "l")
    assert stat.S_ISLNK(before.st_mode)
    mem.apply_now([Symlink("l", "/etc/hostname", expect=mem.items["l"].version)])
    await m.vfs.refresh_dirs([""])
    after = await resolve(m.vfs, "l")
    assert after is not before and not before.attached
    assert after.st_mode == stat.S_IFREG | 0o444
    assert await read_file(m.vfs, "l") == b"/etc/hostname"


async def test_a_link_from_the_remote_moved_out_of_reach_becomes_a_file(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """`a/b/c/d -> ../../..` stays inside the mount where the remote has it; after
    `mv a/b b` (or `mv a/b/c/d d`) the same target climbs out of the mount, and the
    kernel followed it: `echo > b/c/d/x` wrote beside the mount. Now it is what a
    listing there would show: a read-only file holding the target (a new inode)."""
    mem.apply_now([Symlink("a/b/c/d", "../../.."), Symlink("a/b/c/e", "../../..")])
    mem.put("a/b/c/f.txt", b"f\n")
    m = await make_mount()
    before = await resolve(m.vfs, "a/b/c/d")
    assert stat.S_ISLNK(before.st_mode)
    await m.vfs.rename(ROOT, "a", ROOT, "top", 0)  # (deeper or level: still inside)
    assert stat.S_ISLNK((await resolve(m.vfs, "top/b/c/d")).st_mode)
    top_b = await resolve(m.vfs, "top/b")
    await m.vfs.rename(top_b.ino, "c", ROOT, "c", 0)  # a directory above it moves up
    after = await resolve(m.vfs, "c/d")
    assert after is not before and not before.attached
    with pytest.raises(FsError) as e:  # (the kernel may still hold it: never followed)
        m.vfs.readlink(before.ino)
    assert e.value.errno == errno.EINVAL
    assert after.st_mode == stat.S_IFREG | 0o444
    assert await read_file(m.vfs, "c/d") == b"../../.."
    with pytest.raises(FsError) as e:
        m.vfs.readlink(after.ino)
    assert e.value.errno == errno.EINVAL
    assert await read_file(m.vfs, "c/f.txt") == b"f\n"  # (the rest moved as it was)
    c = await resolve(m.vfs, "c")
    await m.vfs.rename(c.ino, "e", ROOT, "e", 0)  # the link itself moves up
    assert (await resolve(m.vfs, "e")).st_mode == stat.S_IFREG | 0o444
    assert await m.drain() == []
    # The remote keeps exactly what it had, moved.
    assert (mem.items["c/d"].kind, mem.items["c/d"].data) == ("symlink", b"../../..")
    assert (mem.items["e"].kind, mem.items["e"].data) == ("symlink", b"../../..")
    await m.restart()
    assert (await resolve(m.vfs, "c/d")).st_mode == stat.S_IFREG | 0o444


async def test_a_link_made_here_moved_out_of_reach_stays_a_link(make_mount: MakeMount) -> None:
    m = await make_mount()
    await mkdirs(m.vfs, "a/b")
    b = await resolve(m.vfs, "a/b")
    await m.vfs.symlink(b.ino, "up", "../..")
    await m.vfs.rename(b.ino, "up", ROOT, "up", 0)
    node = await resolve(m.vfs, "up")
    assert stat.S_ISLNK(node.st_mode) and m.vfs.readlink(node.ino) == "../.."


async def test_a_bare_repository_from_the_remote_belongs_to_nobody(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """Under any name, a directory holding HEAD, objects/ and refs/ is what git takes
    for a git directory (this stop's security probe ran a planted core.pager there)."""
    mem.put("lib/repo.git/HEAD", b"ref: refs/heads/main\n")
    mem.put("lib/repo.git/config", b"[core]\n\tpager = touch /tmp/pwned\n")
    mem.put("lib/repo.git/objects/info/packs", b"")
    mem.put("lib/repo.git/refs/heads/main", b"0" * 40 + b"\n")
    mem.put("lib/looks/HEAD", b"not a repo: no objects/ or refs/\n")
    mem.put("lib/looks/refs/x", b"x")
    m = await make_mount()
    for path in ("lib/repo.git", "lib/looks"):  # (known once what it holds is listed,
        await listdir(m.vfs, path)  # as git's own test of a directory lists it first)
    for path in ("lib/repo.git", "lib/repo.git/refs"):
        assert await owner(m, path) == (NOBODY, NOBODY), path
    for path in ("", "lib", "lib/looks", "lib/looks/HEAD"):
        assert await owner(m, path) == ME, path


async def test_a_bare_repository_made_here_is_yours_for_the_session(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    m = await make_mount(metadata_ttl=0.0)
    for path in ("b.git/objects", "b.git/refs/heads"):
        await mkdirs(m.vfs, path)
    await write_file(m.vfs, "b.git/HEAD", b"ref: refs/heads/main\n")
    await write_file(m.vfs, "b.git/refs/heads/main", b"0\n")
    assert await m.drain() == []
    await listdir(m.vfs, "b.git")
    assert await owner(m, "b.git") == ME
    # Forgotten and listed again (the sweep keeps it), it is still the maker's.
    m.vfs.forget([(n.ino, n.lookups) for n in m.vfs.inodes.nodes() if n.ino != ROOT])
    m.vfs.sweep()
    await listdir(m.vfs, "b.git")
    assert await owner(m, "b.git") == ME
    again = await make_mount()  # (another state directory: the remote's now)
    await listdir(again.vfs, "b.git")
    assert await owner(again, "b.git") == (NOBODY, NOBODY)
