"""Issue 17 finding 3: other local users could hijack a mount's control channel.

Without XDG_RUNTIME_DIR the control socket lived in /tmp/repomount-UID, created with
exist_ok and no check of its owner or mode: another user pre-created that directory,
served a socket in it, received the victim's `repomount sync` and answered as the
daemon. Now the mount refuses such a directory, the CLI only believes a peer running
as our own uid (SO_PEERCRED), and the daemon only obeys our own uid (or root).

The fallback directory follows TMPDIR, so these tests use one of their own instead of
the machine's /tmp/repomount-UID.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mount import MountProc, force_unmount, is_mounted, repomount
from support.otheruser import OTHER_GID, OTHER_UID, python_as_other
from support.server import ServerProc
from support.util import wait_until

IMPOSTOR = """
path, log = sys.argv[1], open(sys.argv[2], "a", buffering=1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.chdir(os.path.dirname(path))  # named relative: its full path may be too long for bind
s.bind(os.path.basename(path))
os.chmod(path, 0o666)
become_other()
s.listen(8)  # the credentials a client sees are the listener's at listen()
log.write("listening\\n")
while True:
    c, _ = s.accept()
    with c:
        data = c.recv(65536)
        if data:
            log.write("request " + data.decode(errors="replace"))
            answer = {"ok": True, "pending": [], "online": True, "from": "the impostor"}
            c.sendall(json.dumps(answer).encode() + b"\\n")
"""

NOSY_CLIENT = """
become_other()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(json.dumps({"cmd": sys.argv[2]}).encode() + b"\\n")
buf = b""
while chunk := s.recv(65536):
    buf += chunk
print(buf.decode(errors="replace"), end="")
"""


def _socket_name(mountpoint: Path) -> str:
    """The name the CLI looks for (control.py derives it from the mountpoint)."""
    return hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:20] + ".sock"


def _fallback_env(open_dir: Path, **extra: str) -> dict[str, str]:
    """No XDG_RUNTIME_DIR: the control socket falls back to $TMPDIR/repomount-UID."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    return {**env, "TMPDIR": str(open_dir), **extra}


class Impostor:
    def __init__(self, sock: Path, log: Path) -> None:
        self.log = log
        self.proc = python_as_other(IMPOSTOR, str(sock), str(log), stdin=subprocess.DEVNULL)
        wait_until(self._listening, 15, "the impostor to listen")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the impostor exited with {self.proc.returncode}")
        return self.log.exists() and "listening" in self.log.read_text()

    def requests(self) -> list[str]:
        return [ln for ln in self.log.read_text().splitlines() if ln.startswith("request")]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def impostors() -> Iterator[list[Impostor]]:
    started: list[Impostor] = []
    yield started
    for impostor in started:
        impostor.stop()


@pytest.mark.parametrize("case", ["other_owner", "group_other_bits", "symlink"])
def test_mount_refuses_a_control_directory_others_control(
    server: ServerProc, tmp_path: Path, open_dir: Path, case: str
) -> None:
    server.create_repo("c")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    runtime = open_dir / f"repomount-{os.getuid()}"
    if case == "symlink":
        target = open_dir / "elsewhere"
        target.mkdir(mode=0o700)
        runtime.symlink_to(target)
    else:
        runtime.mkdir(mode=0o700)
        if case == "other_owner":
            os.chown(runtime, OTHER_UID, OTHER_GID)
        else:
            os.chmod(runtime, 0o755)
    env = _fallback_env(
        open_dir,
        REPOMOUNT_TOKEN=server.token,
        XDG_STATE_HOME=str(tmp_path / "xs"),
        XDG_CACHE_HOME=str(tmp_path / "xc"),
    )
    try:
        r = repomount("mount", f"{server.url}/c", str(mnt), env=env, timeout=60)
        assert r.returncode != 0, "mounted with a control socket others can reach"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("repomount: "), r.stderr
        assert str(runtime) in lines[0]
        assert not is_mounted(mnt)
        assert not any(p.name.endswith(".sock") for p in runtime.iterdir())
    finally:
        repomount("unmount", str(mnt), "--drain-timeout", "10", env=env)
        force_unmount(mnt)


@pytest.mark.parametrize("case", ["hijacked_fallback_dir", "impostor_in_our_dir"])
def test_cli_never_believes_an_impostor(
    tmp_path: Path, open_dir: Path, impostors: list[Impostor], case: str
) -> None:
    """`repomount status` and `sync` refuse a socket served by another uid: they send
    it no command and show nothing it says."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if case == "hijacked_fallback_dir":
        sock_dir = open_dir / f"repomount-{os.getuid()}"
        sock_dir.mkdir(mode=0o700)
        os.chown(sock_dir, OTHER_UID, OTHER_GID)  # pre-created by the other user
        env = _fallback_env(open_dir)
    else:  # our own private directory; the socket in it is served by another uid
        runtime = tmp_path / "run"
        sock_dir = runtime / "repomount"
        sock_dir.mkdir(parents=True, mode=0o700)
        os.chmod(runtime, 0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    impostor = Impostor(sock_dir / _socket_name(mnt), tmp_path / "impostor.log")
    impostors.append(impostor)

    for args in (("status", str(mnt), "--json"), ("sync", str(mnt), "--timeout", "5")):
        r = repomount(*args, env=env, timeout=30)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "impostor" not in r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("repomount: "), r.stderr
        assert str(OTHER_UID) in lines[0], r.stderr  # says whom it refused
    assert impostor.requests() == [], "a command reached the impostor"


def test_daemon_answers_no_other_uid(server: ServerProc, tmp_path: Path, open_dir: Path) -> None:
    """Even when its socket is reachable (here made so by hand), a mount obeys no
    command from another uid."""
    server.create_repo("d")
    runtime = open_dir / "run"
    runtime.mkdir(mode=0o700)
    m = MountProc(
        f"{server.url}/d",
        tmp_path / "mnt",
        work_dir=tmp_path / "work",
        token=server.token,
        env={"XDG_RUNTIME_DIR": str(runtime)},
    )
    m.start()
    try:
        sock = runtime / "repomount" / _socket_name(m.path)
        assert repomount("status", str(m.path), env=m.env).returncode == 0  # ours: answered
        for path, mode in ((runtime, 0o711), (sock.parent, 0o711), (sock, 0o666)):
            os.chmod(path, mode)
        nosy = python_as_other(NOSY_CLIENT, str(sock), "status", stdout=subprocess.PIPE)
        out, _ = nosy.communicate(timeout=30)
        assert nosy.returncode == 0, "the other user could not even connect: test is void"
        reply = json.loads(out) if out.strip() else {}
        assert not reply.get("ok") and "pending" not in reply, reply
    finally:
        m.stop()
