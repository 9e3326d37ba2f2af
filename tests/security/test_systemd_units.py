"""Issue 15, systemd: there were no units; a mount could not survive a reboot, and
nothing told a service manager when a mount was ready or what it was doing.

Now systemd/repomount@.service (system) and systemd/user/repomount@.service (user)
mount a named remote per instance, `Type=notify`: the mount sends READY=1 only once
it answers a `stat`, STATUS= lines with the changes pending, STOPPING=1 when a stop
begins; a stop sends what is pending once, within the mount's drain timeout (below
the unit's TimeoutStopSec), and what is not sent stays in the journal for the next
start. Both units pass `systemd-analyze verify`; the ExecStart line runs here as
systemd would run it, with NOTIFY_SOCKET bound by the test.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repomount.options import DEFAULTS
from support.mount import force_unmount, is_mounted
from support.server import ServerProc
from support.util import wait_until

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_UNIT = ROOT / "systemd" / "repomount@.service"
USER_UNIT = ROOT / "systemd" / "user" / "repomount@.service"
STOP_MARGIN = 5.0  # seconds for unmounting and leaving, beyond the drain timeout


def _service(unit: Path) -> dict[str, list[str]]:
    """The [Service] section: key -> every value given (Environment= repeats)."""
    section, found = "", {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


# --------------------------------------------------------------------------- verify


def _verify(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def _stub(path: Path) -> None:
    """An executable where the unit's ExecStart looks (verify checks that it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m repomount "$@"\n')
    path.chmod(0o755)


def test_the_system_unit_verifies(tmp_path: Path) -> None:
    """Under --root, so its /usr/local/bin/repomount need not be installed here."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(SYSTEM_UNIT, root / "etc/systemd/system")
    [exec_start] = _service(SYSTEM_UNIT)["ExecStart"]
    _stub(root / shlex.split(exec_start)[0].lstrip("/"))
    r = _verify(["verify", "--man=no", f"--root={root}", "repomount@work.service"], {**os.environ})
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_the_user_unit_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # verify also loads the machine's user units; their sockets under %t must fit a
    # socket address, so the runtime directory is a short one (pytest's can be long).
    with tempfile.TemporaryDirectory(prefix="rm-run-") as runtime:
        [exec_start] = _service(USER_UNIT)["ExecStart"]
        _stub(Path(shlex.split(exec_start)[0].replace("%h", str(home))))
        env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": runtime}
        r = _verify(["--user", "verify", "--man=no", str(USER_UNIT)], env)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_both_units_run_the_same_mount_and_stop_in_time() -> None:
    system, user = _service(SYSTEM_UNIT), _service(USER_UNIT)
    for unit in (system, user):
        assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
        assert "%i:" in unit["ExecStart"][0] and "--foreground" in unit["ExecStart"][0]
        stop = float(unit["TimeoutStopSec"][0])
        assert DEFAULTS.drain_timeout + STOP_MARGIN < stop  # the default drain fits
    assert shlex.split(system["ExecStart"][0])[1:] == shlex.split(user["ExecStart"][0])[1:]
    assert system["Environment"] == user["Environment"]


# --------------------------------------------------------------------------- run it


class Notifications:
    """A datagram socket standing for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.chdir(path.parent):  # relative: the full path may be too long
            self.sock.bind(path.name)
        self.seen: list[str] = []

    def wait_for(self, what: str, timeout: float) -> str:
        """The first assignment (`READY=1`, `STATUS=...`) containing `what`, waiting
        for new messages as long as needed."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.seen:
                if what in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what!r} in {timeout:g} s; got {self.seen}")
            self.sock.settimeout(left)
            try:
                self.seen += self.sock.recv(65536).decode().splitlines()
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[Notifications]:
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.close()


class Unit:
    """The user unit's ExecStart, started as systemd starts it: its Environment= with
    the specifiers pointing into the test's directory, NOTIFY_SOCKET, INVOCATION_ID,
    and stdout/stderr as the journal's stream (JOURNAL_STREAM names it)."""

    def __init__(self, tmp: Path, instance: str, notify: Path, server: ServerProc) -> None:
        self.tmp = tmp
        self.specifiers = {
            "%E": str(tmp / "config"), "%S": str(tmp / "state"), "%C": str(tmp / "cache"),
            "%t": str(tmp / "runtime"), "%h": str(tmp / "home"), "%i": instance,
        }  # fmt: skip
        (tmp / "runtime").mkdir(mode=0o700, exist_ok=True)
        service = _service(USER_UNIT)
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("REPOMOUNT_TOKEN", "XDG_RUNTIME_DIR")
        }
        for assignment in shlex.split(self._expand(" ".join(service["Environment"]))):
            key, _, value = assignment.partition("=")
            self.env[key] = value
        self.env.update(NOTIFY_SOCKET=str(notify), INVOCATION_ID="0" * 32)
        self.argv = shlex.split(self._expand(service["ExecStart"][0]))
        self.argv[:1] = [sys.executable, "-m", "repomount"]  # the program it names
        self.journal = tmp / "journal"
        self.proc: subprocess.Popen[bytes] | None = None

    def _expand(self, text: str) -> str:
        for specifier, value in self.specifiers.items():
            text = text.replace(specifier, value)
        return text

    def start(self) -> None:
        with self.journal.open("ab") as out:
            st = os.fstat(out.fileno())
            env = {**self.env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
            self.proc = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def log(self) -> str:
        return self.journal.read_text(errors="replace")


def test_the_unit_notifies_and_a_stop_keeps_what_it_could_not_send(
    server: ServerProc, tmp_path: Path, notifications: Notifications
) -> None:
    server.create_repo("svc")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    drain = 3.0
    unit = Unit(tmp_path, "svc", notifications.path, server)
    config = Path(unit.specifiers["%E"]) / "repomount" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[remote.svc]\nsrc = "{server.url}/svc"\ntoken = "{server.token}"\n'
        f'mountpoint = "{mnt}"\ndrain-timeout = {drain}\nflush-delay = 0.2\n'
    )
    config.chmod(0o600)
    stop_timeout = float(_service(USER_UNIT)["TimeoutStopSec"][0])
    try:
        unit.start()
        notifications.wait_for("READY=1", 60)
        assert is_mounted(mnt) and os.listdir(mnt) == []  # answering once READY=1 came
        assert notifications.seen[:2] == ["READY=1", f"STATUS=mounted {server.url}/svc on {mnt}"]
        assert "<6>repomount.mounting: mounted" in unit.log()  # the journal, by priority

        server.stop()  # the remote goes away with 100 changes to send
        for i in range(100):
            (mnt / f"f{i:03}.txt").write_bytes(b"%d" % i)
        notifications.wait_for("100 changes pending", 60)
        assert unit.proc is not None
        started = time.monotonic()
        unit.proc.send_signal(signal.SIGTERM)
        code = unit.proc.wait(stop_timeout)
        took = time.monotonic() - started
        assert code == 1, unit.log()
        assert took < min(stop_timeout, drain + STOP_MARGIN), f"the stop took {took:.1f} s"
        notifications.wait_for("STOPPING=1", 5)
        stopped = notifications.wait_for("STATUS=stopped", 5)
        assert "not sent stay in the journal" in stopped, stopped
        assert "<3>repomount.fuse.mount: stopped with" in unit.log()
        assert not is_mounted(mnt)
        [journal] = Path(unit.specifiers["%S"]).glob("repomount/*/journal.db")
        with sqlite3.connect(journal) as db:
            kept = {row[0] for row in db.execute("SELECT path FROM changes")}
        assert kept == {f"f{i:03}.txt" for i in range(100)}

        server.start()  # the next start sends them
        notifications.seen.clear()
        unit.start()
        notifications.wait_for("READY=1", 60)
        wait_until(lambda: len(server.tree("svc")) == 100, 60, "the journal to be replayed")
        assert server.tree("svc")["f042.txt"] == b"42"
        notifications.wait_for("STATUS=online, nothing pending", 30)
        assert unit.proc is not None
        unit.proc.send_signal(signal.SIGTERM)
        assert unit.proc.wait(stop_timeout) == 0, unit.log()
        assert "STATUS=stopped: everything sent" in notifications.wait_for("stopped", 5)
    finally:
        if unit.proc is not None and unit.proc.poll() is None:
            unit.proc.kill()
            unit.proc.wait(10)
        force_unmount(mnt)
