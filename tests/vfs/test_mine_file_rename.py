"""Second reading of outcomes._conflict: under --on-conflict mine, a file's rename that
conflicts overwrites the remote's file at the new name. keep_dir_as_copy (now asked
first, under mine too) takes a rename journaled with expect ANY for a directory's: a
file listed without a version (Terminal Use without a checksum) is renamed with ANY."""

from __future__ import annotations

import dataclasses

import pytest

from repomount.remotes.base import Listing
from repomount.vfs.conflicts import Policy
from support.memremote import MemRemote
from support.vfsutil import MakeMount, append, read_file, resolve


@pytest.mark.parametrize("versioned", [True, False], ids=["listed-version", "no-version"])
async def test_mine_overwrites_at_a_file_renames_new_name(
    make_mount: MakeMount, mem: MemRemote, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:
    mem.put("a", b"mine\n")
    if not versioned:
        real = mem.listing

        def unversioned(path: str, *, recursive: bool = False) -> Listing:
            got = real(path, recursive=recursive)
            entries = [
                dataclasses.replace(e, version=None) if e.kind == "file" else e for e in got.entries
            ]
            return Listing(got.path, got.head, entries, got.recursive)

        monkeypatch.setattr(mem, "listing", unversioned)
    m = await make_mount(on_conflict=Policy.MINE)
    root = await resolve(m.vfs, "")
    assert await read_file(m.vfs, "a") == b"mine\n"
    await m.vfs.rename(root.ino, "a", root.ino, "b", 0)
    mem.put("b", b"theirs\n")  # another client made the new name meanwhile
    assert await m.drain() == []
    assert mem.files() == {"b": b"mine\n"}, mem.files()  # mine: overwrote the remote


async def test_mine_rename_of_a_file_changed_elsewhere_shows_what_it_moved(
    make_mount: MakeMount, mem: MemRemote
) -> None:
    """The source changed elsewhere while our rename was on its way: mine sends the
    rename again without a precondition, and the remote moves *their* content to the new
    name. The mount relabelled its cached copy of the old content as that new version,
    so it showed the old bytes at the new name (after a remount too: the cache keeps
    them), and the next save, based on those bytes and expecting their version,
    replaced their content on the remote without a conflict."""
    mem.put("a", b"base\n")
    m = await make_mount(on_conflict=Policy.MINE)
    root = await resolve(m.vfs, "")
    assert await read_file(m.vfs, "a") == b"base\n"
    await m.vfs.rename(root.ino, "a", root.ino, "b", 0)
    mem.put("a", b"theirs\n")  # another client changed it meanwhile
    assert await m.drain() == []
    assert mem.files() == {"b": b"theirs\n"}, mem.files()  # (the remote moved theirs)
    assert await read_file(m.vfs, "b") == b"theirs\n"
    await append(m.vfs, "b", b"more\n")
    assert await m.drain() == []
    assert mem.files() == {"b": b"theirs\nmore\n"}, mem.files()
    await m.restart()
    assert await read_file(m.vfs, "b") == b"theirs\nmore\n"


@pytest.mark.parametrize("policy", [Policy.MINE, Policy.KEEP_BOTH, Policy.THEIRS])
async def test_a_delete_of_a_file_changed_elsewhere_keeps_their_content(
    make_mount: MakeMount, mem: MemRemote, policy: Policy
) -> None:
    """SEMANTICS: no policy deletes user content. A delete that meets a change made
    elsewhere is dropped under every policy, `mine` included (it sent the delete again
    without a precondition, and their new content left the tree)."""
    mem.put("a", b"base\n")
    m = await make_mount(on_conflict=policy)
    root = await resolve(m.vfs, "")
    assert await read_file(m.vfs, "a") == b"base\n"
    await m.vfs.unlink(root.ino, "a")
    mem.put("a", b"theirs\n")  # another client changed it meanwhile
    assert await m.drain() == []
    assert mem.files() == {"a": b"theirs\n"}, mem.files()
    await m.restart()
    assert await read_file(m.vfs, "a") == b"theirs\n"
