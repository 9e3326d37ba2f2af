"""A socket path too long for a socket address (found moving the suite to pytest-xdist).

A socket address holds at most 107 bytes of path. The control socket is
$XDG_RUNTIME_DIR/repomount/HASH.sock (else $TMPDIR/repomount-UID/HASH.sock), so a
runtime or temporary directory of some 75 bytes or more, legitimate and the rule under
xdist (/tmp/pytest-of-root/pytest-N/popen-gw0/test_.../), made every mount fail at
start with a traceback ("OSError: AF_UNIX path too long"), the demo with it, and
`repomount status/sync/unmount` could not reach a mount there; a NOTIFY_SOCKET as long
was never told anything. Now such a socket is reached through its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest

from repomount import sdnotify
from support.mount import MountProc, is_mounted, repomount
from support.server import ServerProc

SUN_PATH = 108  # bytes of sockaddr_un.sun_path, its terminating NUL included
DEEP = "a-directory-deeper-than-a-socket-address-holds-" * 2


@pytest.mark.parametrize("variable", ["XDG_RUNTIME_DIR", "TMPDIR"])
def test_a_mount_in_a_long_runtime_directory_answers_its_commands(
    server: ServerProc, tmp_path: Path, variable: str
) -> None:
    server.create_repo("r")
    deep = tmp_path / DEEP
    deep.mkdir(mode=0o700)
    m = MountProc(
        f"{server.url}/r", tmp_path / "mnt", work_dir=tmp_path / "work", token=server.token
    )
    for name in ("XDG_RUNTIME_DIR", "TMPDIR"):
        m.env.pop(name, None)
    m.env[variable] = str(deep)
    m.start()
    try:
        uid = os.getuid()
        sockets = deep / ("repomount" if variable == "XDG_RUNTIME_DIR" else f"repomount-{uid}")
        [sock] = sockets.glob("*.sock")
        assert len(os.fsencode(sock)) >= SUN_PATH  # too long to be named in an address

        (m.path / "a.txt").write_text("sent through a long control path\n")
        m.sync()  # `repomount sync`: answered once the change is on the server
        assert server.get("r", "a.txt") == b"sent through a long control path\n"
        r = repomount("status", str(m.path), "--json", env=m.env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["pending"] == []
        assert "Traceback" not in m.log()

        r = m.unmount()  # asks the daemon to send what is pending, then it exits
        assert r.returncode == 0, r.stderr + m.log()
        assert r.stdout.strip() == f"unmounted {m.path}"  # not "the daemon was not running"
        assert not is_mounted(m.path)
        assert not sock.exists()
    finally:
        m.stop()


def test_a_long_notify_socket_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / DEEP
    deep.mkdir()
    path = deep / "notify.sock"
    assert len(os.fsencode(path)) >= SUN_PATH
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        with contextlib.chdir(deep):  # the test's own way to name it: relative
            manager.bind(path.name)
        monkeypatch.setenv(sdnotify.ENV, str(path))
        assert sdnotify.notify("READY=1", "STATUS=here")
        manager.settimeout(10)
        assert manager.recv(4096) == b"READY=1\nSTATUS=here"
