"""On Sentry a replace deletes the old file, then uploads the new one: for that moment
the remote has no file there, and a directory with no other file below it is not listed
at all. A poll in that moment dropped the directory with the open file in it: `ls d`
said ENOENT, and what the program wrote next went to a file with no name, discarded at
its close, with nothing pending, no conflict and no error (LTP's fsx-linux in a
subdirectory of a Sentry mount: the release kept an older content). Found by fsx-linux;
the listing rule is pinned in tests/vfs/test_listing_keeps_busy_dirs.py."""

from __future__ import annotations

import os

import pytest

from support.mount import MountProc
from support.mountfixtures import MountFactory
from support.server import ServerProc

pytestmark = pytest.mark.backends("sentry")


def test_a_file_fsynced_over_and_over_in_a_directory_keeps_its_name_and_content(
    server: ServerProc, mount_factory: MountFactory
) -> None:
    m: MountProc = mount_factory(extra_args=["--poll-interval", "0.2"])
    (m.path / "d").mkdir()
    fd = os.open(m.path / "d" / "f", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(150):
            os.pwrite(fd, b"%06d\n" % i * 100, 0)
            os.fsync(fd)  # one replace each: a delete, then an upload
            if i % 10 == 0:
                assert os.listdir(m.path / "d") == ["f"], i
    finally:
        os.close(fd)
    m.sync()
    want = b"%06d\n" % 149 * 100
    assert (m.path / "d" / "f").read_bytes() == want
    with server.client() as c:
        r = c.get(f"/v1/repos/{m.repo}/files/d/f")
        assert r.status_code == 200 and r.content == want
