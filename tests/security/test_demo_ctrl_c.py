"""Issue 16 #1: Ctrl-C in the demo lost the last writes.

The demo's embedded server shared the terminal's process group, so Ctrl-C stopped it at
once; the mount then waited for it twice, printed that the changes "go out at the next
mount", and the demo deleted the directory holding them. Now the server has a session
of its own, Ctrl-C drains the mount first and then stops the server, and a demo that
could not send everything keeps its directory and says how to send the rest.

These tests run the demo as a user does: on a terminal (a pseudo-terminal), stopped
with the Ctrl-C character, which the terminal turns into SIGINT for the foreground
process group.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import repomount
from support.mount import force_unmount, is_mounted
from support.server import ServerProc
from support.util import wait_until

CTRL_C = b"\x03"


class DemoTerminal:
    """`repomount demo ARGS` on a pseudo-terminal of its own, as its foreground job."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self._chunks: list[bytes] = []
        pid, self.fd = pty.fork()
        if pid == 0:  # the child: the terminal's session leader and foreground group
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, "-m", "repomount", "demo", *args], env)
            finally:
                os._exit(127)
        self.pid = pid
        self.returncode: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def output(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        try:
            wait_until(lambda: text in self.output(), timeout, repr(text) + " on the terminal")
        except AssertionError as e:
            raise AssertionError(f"{e}; the terminal shows:\n{self.output()}") from None

    def ctrl_c(self) -> None:
        os.write(self.fd, CTRL_C)

    def wait(self, timeout: float) -> int:
        def exited() -> bool:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            return pid != 0

        wait_until(exited, timeout, "the demo to exit")
        self._reader.join(5)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(p) for p in path.read_text().split()]


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"  # where the demo makes its directory
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TERM": "xterm"}
    env.pop("REPOMOUNT_TOKEN", None)
    # The demo runs in another directory: the code under test, wherever that is.
    src = str(Path(repomount.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[list[DemoTerminal]]:
    started: list[DemoTerminal] = []
    yield started
    for term in started:
        term.kill()
    for mnt in tmp_path.glob("mnt*"):
        force_unmount(mnt)


def _demo_url(term: DemoTerminal) -> str:
    match = re.search(r"mounted (http://\S+)/demo on", term.output())
    assert match, term.output()
    return match.group(1)


def test_ctrl_c_sends_the_last_write_before_stopping_the_server(
    tmp_path: Path, demo_env: dict[str, str], terminals: list[DemoTerminal]
) -> None:
    mnt, kept = tmp_path / "mnt", tmp_path / "demo-data"
    term = DemoTerminal([str(mnt), "--dir", str(kept)], cwd=tmp_path, env=demo_env)
    terminals.append(term)
    term.wait_for("Press Ctrl-C")
    (mnt / "last.txt").write_text("written just before Ctrl-C\n")
    term.ctrl_c()
    assert term.wait(60) == 0, term.output()
    out = term.output()
    assert not is_mounted(mnt)
    assert "every change reached the server" in out, out
    assert "did not reach" not in out and "stay in the journal" not in out, out

    # What the demo's server kept: its store, served again.
    server = ServerProc(kept / "server")
    server.start()
    try:
        assert server.get("demo", "last.txt") == b"written just before Ctrl-C\n"
    finally:
        server.stop()


def test_a_demo_that_could_not_send_keeps_its_directory(
    tmp_path: Path, demo_env: dict[str, str], terminals: list[DemoTerminal]
) -> None:
    """The server dies, a file is written, Ctrl-C twice (the second: stop now): the
    demo keeps its directory, says where, and `--dir` there sends the change."""
    mnt = tmp_path / "mnt"
    term = DemoTerminal([str(mnt)], cwd=tmp_path, env=demo_env)
    terminals.append(term)
    term.wait_for("Press Ctrl-C")
    os.listdir(mnt)
    (server_pid,) = term.children()
    os.kill(server_pid, signal.SIGKILL)
    (mnt / "late.txt").write_text("written after the server died\n")
    term.ctrl_c()
    term.wait_for("stopping", 30)
    term.ctrl_c()
    assert term.wait(60) != 0, term.output()
    out = term.output()
    assert not is_mounted(mnt)
    assert "every change reached the server" not in out, out
    (work,) = (tmp_path / "tmp").glob("repomount-demo-*")  # kept, with the journal, named
    assert (work / "state" / "journal.db").exists()
    assert f"repomount demo --dir {work}" in out, out

    again = DemoTerminal([str(tmp_path / "mnt2"), "--dir", str(work)], cwd=tmp_path, env=demo_env)
    terminals.append(again)
    again.wait_for("Press Ctrl-C")
    with httpx.Client(base_url=_demo_url(again)) as c:
        r = c.get("/v1/repos/demo/files/late.txt")
        assert r.status_code == 200 and r.text == "written after the server died\n"
    again.ctrl_c()
    assert again.wait(60) == 0, again.output()
