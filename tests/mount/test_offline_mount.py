"""What works with the server away (docs/semantics.md "Offline"), on a real mount."""

from __future__ import annotations

import errno
import os
import subprocess
import time

import pytest

from support.backends import BACKENDS
from support.mount import MountProc, is_mounted
from support.server import ServerProc


def test_appends_and_creates_where_nothing_was_seen_go_out_when_the_server_is_back(
    server: ServerProc, mount_factory
) -> None:
    m: MountProc = mount_factory()
    server.put(m.repo, "log.txt", b"line 1\n")
    server.put(m.repo, "d/old.txt", b"old")
    assert sorted(os.listdir(m.path)) == ["d", "log.txt"]  # listed, never read
    server.stop()
    subprocess.run(f"echo 'line 2' >> {m.path}/log.txt", shell=True, check=True)
    with pytest.raises(OSError) as e:
        (m.path / "log.txt").read_bytes()  # bytes this mount never saw
    assert e.value.errno == errno.EIO
    (m.path / "d" / "new.txt").write_bytes(b"made offline")
    (m.path / "new dir").mkdir()
    (m.path / "new dir" / "f").write_bytes(b"f")
    server.start()
    m.sync()
    assert server.tree(m.repo) == {
        "log.txt": b"line 1\nline 2\n",
        "d/old.txt": b"old",
        "d/new.txt": b"made offline",
        "new dir/f": b"f",
    }
    assert (m.path / "log.txt").read_bytes() == b"line 1\nline 2\n"


def test_a_create_before_anything_was_listed(server: ServerProc, mount_factory) -> None:
    m: MountProc = mount_factory()
    server.put(m.repo, "there.txt", b"remote")
    server.stop()  # before the mount listed anything
    (m.path / "new.txt").write_bytes(b"made offline")
    assert (m.path / "new.txt").read_bytes() == b"made offline"
    with pytest.raises(OSError) as e:
        os.listdir(m.path)  # what the root holds is unknown: EIO, not a partial list
    assert e.value.errno == errno.EIO
    server.start()
    m.sync()
    assert server.tree(m.repo) == {"there.txt": b"remote", "new.txt": b"made offline"}
    assert sorted(os.listdir(m.path)) == ["new.txt", "there.txt"]


@pytest.mark.backends(*BACKENDS)
def test_changes_the_flusher_tries_to_send_while_the_server_is_away_wait_for_it(
    server: ServerProc, mount_factory
) -> None:
    """The flusher's tries meet a remote that is not there: the mount stays up and
    serves what was written, which goes out once the server is back (a check of a
    file's current content that failed inside a nursery took the mount down)."""
    m: MountProc = mount_factory()
    server.put(m.repo, "a.txt", b"a1")
    server.put(m.repo, "b.txt", b"b1")
    assert (m.path / "a.txt").read_bytes() == b"a1"
    assert (m.path / "b.txt").read_bytes() == b"b1"
    server.stop()
    (m.path / "a.txt").write_bytes(b"a2, written offline")
    (m.path / "b.txt").write_bytes(b"b2, written offline")
    time.sleep(3)  # past the flush delay: the flusher tries, and fails
    assert is_mounted(m.path)
    assert (m.path / "a.txt").read_bytes() == b"a2, written offline"
    server.start()
    m.sync()
    assert server.tree(m.repo) == {"a.txt": b"a2, written offline", "b.txt": b"b2, written offline"}
