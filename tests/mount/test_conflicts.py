"""A file changed on the server while edited here: detected, reported, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import re

import pytest

from support.mount import MountProc, repomount
from support.server import ServerProc
from support.util import wait_until

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")

CONFLICT = re.compile(r"^doc\.conflict-\d{8}T\d{6}Z-[^/]+\.txt$")


def _edit_while_server_changes(server: ServerProc, m: MountProc) -> OSError | None:
    """Write 'mine' over doc.txt while another client writes 'theirs'; fsync."""
    fd = os.open(m.path / "doc.txt", os.O_RDWR | os.O_TRUNC)
    try:
        os.write(fd, b"mine\n")
        server.put(m.repo, "doc.txt", b"theirs\n")  # another client, meanwhile
        try:
            os.fsync(fd)
        except OSError as e:
            return e
        return None
    finally:
        os.close(fd)


def _mount_with_doc(server: ServerProc, mount_factory, *args: str) -> MountProc:
    m: MountProc = mount_factory(extra_args=list(args))
    server.put(m.repo, "doc.txt", b"base\n")
    assert (m.path / "doc.txt").read_bytes() == b"base\n"
    return m


def test_keep_both_is_the_default(server: ServerProc, mount_factory) -> None:
    m = _mount_with_doc(server, mount_factory, "--metadata-ttl", "0.2")
    err = _edit_while_server_changes(server, m)
    assert err is not None and err.errno == errno.ESTALE
    tree = server.tree(m.repo)
    assert tree.pop("doc.txt") == b"theirs\n"
    (copy, content), *rest = tree.items()
    assert not rest and CONFLICT.match(copy) and content == b"mine\n"
    # The mount shows both: the remote's version at the name, ours next to it.
    assert (m.path / "doc.txt").read_bytes() == b"theirs\n"
    assert (m.path / copy).read_bytes() == b"mine\n"
    status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
    assert status["conflicts"] and status["conflicts"][0]["path"] == "doc.txt"
    assert status["pending"] == []


def test_close_is_a_commit_point_and_conflict_resolves_later(
    server: ServerProc, mount_factory
) -> None:
    m = _mount_with_doc(server, mount_factory, "--flush-delay", "2")
    with (m.path / "doc.txt").open("wb") as f:
        f.write(b"local")
    server.put(m.repo, "doc.txt", b"remote")  # before our change goes out
    assert repomount("sync", str(m.path), env=m.env).returncode == 0
    tree = server.tree(m.repo)
    assert tree.pop("doc.txt") == b"remote"
    assert list(tree.values()) == [b"local"]


def test_fail_policy_keeps_the_change_pending(server: ServerProc, mount_factory) -> None:
    m = _mount_with_doc(server, mount_factory, "--on-conflict", "fail")
    err = _edit_while_server_changes(server, m)
    assert err is not None and err.errno == errno.ESTALE
    assert server.tree(m.repo) == {"doc.txt": b"theirs\n"}
    status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
    [pending] = status["pending"]
    assert pending["path"] == "doc.txt" and pending["state"] == "held"
    assert "conflict" in pending["error"]
    assert (m.path / "doc.txt").read_bytes() == b"mine\n"  # still ours, locally
    r = repomount("sync", str(m.path), "--timeout", "5", env=m.env)
    assert r.returncode != 0  # still conflicting: sync says so


def test_theirs_policy_saves_ours_in_the_state_dir(server: ServerProc, mount_factory) -> None:
    m = _mount_with_doc(server, mount_factory, "--on-conflict", "theirs")
    err = _edit_while_server_changes(server, m)
    assert err is not None and err.errno == errno.ESTALE
    assert server.tree(m.repo) == {"doc.txt": b"theirs\n"}
    saved = list(m.state_dir.rglob("conflicts/*/doc.txt"))
    assert [p.read_bytes() for p in saved] == [b"mine\n"]


def test_mine_policy_overwrites(server: ServerProc, mount_factory) -> None:
    m = _mount_with_doc(server, mount_factory, "--on-conflict", "mine")
    assert _edit_while_server_changes(server, m) is None
    assert server.tree(m.repo) == {"doc.txt": b"mine\n"}


def test_new_file_racing_a_remote_create(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory()
    os.listdir(m.path)  # listing cached: "x.txt" does not exist yet
    fd = os.open(m.path / "x.txt", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"here")
    server.put(m.repo, "x.txt", b"there")
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    os.close(fd)
    assert e.value.errno == errno.ESTALE
    tree = server.tree(m.repo)
    assert tree.pop("x.txt") == b"there"
    assert list(tree.values()) == [b"here"]


@pytest.mark.backends("native", "relace", "oxen", "sentry")
def test_a_rename_dropped_for_a_change_elsewhere_leaves_no_name_behind(
    server: ServerProc, mount_factory
) -> None:
    """The file is renamed here while another client changes it: the rename is dropped
    (their content stays at the old name) and the new name goes from the mount too, also
    where listings leave such a file out (Relace: binary content), where the file, never
    listed, was kept as one the listing could not show."""
    m: MountProc = mount_factory(extra_args=["--flush-delay", "2"])
    (m.path / "old.bin").write_bytes(b"\x00\xff ours")
    m.sync()
    os.rename(m.path / "old.bin", m.path / "new.bin")
    server.put(m.repo, "old.bin", b"theirs\n")  # another client, meanwhile
    m.sync()
    assert server.tree(m.repo) == {"old.bin": b"theirs\n"}
    wait_until(lambda: sorted(os.listdir(m.path)) == ["old.bin"], timeout=15)
    assert (m.path / "old.bin").read_bytes() == b"theirs\n"


def test_a_directory_made_where_another_client_made_a_file_goes_beside_it(
    server: ServerProc, mount_factory
) -> None:
    """`mkdir d` here while another client writes a file `d`: the directory went nowhere
    (native: its mkdir was held; elsewhere the write of `d/f`), and everything in it with
    it, shown nowhere, until `unmount` gave up. It goes beside their file as a conflict
    copy, with what it holds."""
    m: MountProc = mount_factory(extra_args=["--flush-delay", "2"])
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_bytes(b"ours\n")
    server.put(m.repo, "d", b"theirs\n")  # another client, meanwhile
    m.sync(timeout=30)
    tree = server.tree(m.repo)
    assert tree.pop("d") == b"theirs\n"
    [(copy_f, ours)] = tree.items()
    assert re.fullmatch(r"d\.conflict-\d{8}T\d{6}Z-[^/]+/f", copy_f) and ours == b"ours\n"
    copy = copy_f.split("/")[0]
    wait_until(lambda: sorted(os.listdir(m.path)) == sorted(["d", copy]), timeout=15)
    assert (m.path / "d").read_bytes() == b"theirs\n"
    assert (m.path / copy / "f").read_bytes() == b"ours\n"
    assert m.unmount().returncode == 0


@pytest.mark.backends("native")
def test_a_file_rewritten_elsewhere_opens_at_its_new_version(
    server: ServerProc, mount_factory
) -> None:
    """Listed here, then rewritten by another client before the mount heard of it: the
    read of the listed version is refused, and every open failed with ESTALE until the
    listing expired. Now the kernel's second lookup (it retries an open once on ESTALE)
    finds the directory listed again and the open reads the new version."""
    m: MountProc = mount_factory(extra_args=["--no-change-feed", "--metadata-ttl", "60"])
    server.put(m.repo, "doc.txt", b"first\n")
    assert os.listdir(m.path) == ["doc.txt"]
    assert os.stat(m.path / "doc.txt").st_size == 6
    server.put(m.repo, "doc.txt", b"second, longer\n")  # another client
    assert (m.path / "doc.txt").read_bytes() == b"second, longer\n"
    assert os.stat(m.path / "doc.txt").st_size == 15
