"""A real `repomount serve` in a subprocess on 127.0.0.1, for tests.

Every ServerProc started is stopped at interpreter exit at the latest, so no test run
leaves a server behind, even when a fixture's teardown never ran.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import quote

import httpx

from support.util import wait_until

READY_RE = re.compile(r"repomount serve: listening on (http://\S+?):(\d+)\s*$", re.M)
ACCESS_RE = re.compile(r"^([A-Z]+) (\S+) (\d{3}) (\d+)ms$")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_running: weakref.WeakSet[ServerProc] = weakref.WeakSet()


class AccessLine(NamedTuple):
    method: str
    path: str  # as sent: percent-encoded, no query string
    status: int
    ms: int


class Connection(NamedTuple):
    """One client connection to the server, as the kernel counts it (`ss -ti`)."""

    received: int  # bytes the server's side got from the client
    unread: int  # of those, bytes the server has not read yet
    sent: int  # bytes the server sent back


def quote_path(path: str) -> str:
    """A repository path for a URL, each segment percent-encoded."""
    return quote(path, safe="/")


class ServerFactory(Protocol):
    """The `server_factory` fixture: a started server with extra `repomount serve` args."""

    def __call__(
        self, extra_args: Sequence[str] = (), *, token: str = "test-token"
    ) -> ServerProc: ...


class ServerProc:
    url: str
    token: str
    data_dir: Path
    log_path: Path

    def __init__(
        self, data_dir: Path, *, token: str = "test-token", extra_args: Sequence[str] = ()
    ) -> None:
        self.data_dir = Path(data_dir)
        self.token = token
        self.extra_args = list(extra_args)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.server.log"
        self.port = 0  # chosen by the first start, reused by restarts
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ---

    def start(self) -> None:
        if self.running:
            raise RuntimeError("server already running")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {**os.environ, "REPOMOUNT_TOKEN": self.token}
        args = [sys.executable, "-m", "repomount", "serve", "--data", str(self.data_dir)]
        args += ["--host", "127.0.0.1", "--port", str(self.port), *self.extra_args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        _running.add(self)
        proc = self.proc

        def listening() -> re.Match[str] | None:
            match = READY_RE.search(self._log_text(offset))
            if match is None and proc.poll() is not None:
                raise RuntimeError(
                    f"repomount serve exited before listening; its log:\n{self._log_text(offset)}"
                )
            return match

        try:
            match = wait_until(listening, START_TIMEOUT, "repomount serve to listen", interval=0.02)
        except AssertionError:
            self.kill()
            raise RuntimeError(
                f"repomount serve timed out before listening; its log:\n{self._log_text(offset)}"
            ) from None
        self.url = f"{match[1]}:{match[2]}"
        self.port = int(match[2])

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it does not stop in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("repomount serve did not stop on SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_peak_kib(self) -> int:
        """The server process's peak resident memory so far (VmHWM), in KiB."""
        return self._status_kib("VmHWM")

    def rss_kib(self) -> int:
        """The server process's resident memory now (VmRSS), in KiB."""
        return self._status_kib("VmRSS")

    def _status_kib(self, field: str) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    # --- HTTP helpers ---

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def create_repo(self, name: str) -> None:
        with self.client() as c:
            c.post("/v1/repos", json={"name": name}).raise_for_status()

    def put(self, repo: str, path: str, data: bytes) -> str:
        with self.client() as c:
            r = c.put(f"/v1/repos/{repo}/files/{quote_path(path)}", content=data)
            r.raise_for_status()
            version: str = r.json()["version"]
            return version

    def get(self, repo: str, path: str) -> bytes:
        with self.client() as c:
            r = c.get(f"/v1/repos/{repo}/files/{quote_path(path)}")
            r.raise_for_status()
            return r.content

    def tree(self, repo: str) -> dict[str, bytes]:
        """Every file of the repo's current head -> its content (one consistent head)."""
        with self.client() as c:
            paths: list[str] = []
            params: dict[str, str] = {"recursive": "1"}
            while True:
                page = c.get(f"/v1/repos/{repo}/tree", params=params)
                page.raise_for_status()
                body = page.json()
                paths += [e["path"] for e in body["entries"] if e["type"] == "file"]
                if body["next_cursor"] is None:
                    break
                params["cursor"] = body["next_cursor"]
            r = c.post(f"/v1/repos/{repo}/read", json={"paths": paths, "at": body["head"]})
            r.raise_for_status()
        files = {}
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            for member in tar:
                f = tar.extractfile(member)
                assert f is not None
                files[member.name] = f.read()
        missing = json.loads(files.pop("MISSING"))
        assert not missing, f"files listed but not readable: {missing}"
        return files

    # --- the access log ---

    def requests(self, since: int = 0) -> list[AccessLine]:
        """Access lines logged so far (across restarts), from the `since`-th on."""
        lines = []
        for line in self._log_text(0).splitlines():
            m = ACCESS_RE.match(line)
            if m:
                lines.append(AccessLine(m[1], m[2], int(m[3]), int(m[4])))
        return lines[since:]

    def mark(self) -> int:
        return len(self.requests())

    # --- requests in progress (the access log has a line only once one is answered) ---

    def connections(self) -> dict[str, Connection]:
        """The server's open client connections, by the client's address:port."""
        filter_ = f"( sport = :{self.port} )"
        out = subprocess.run(
            ["ss", "-tinH", "state", "established", filter_],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found: dict[str, Connection] = {}
        peer = ""
        for line in out.splitlines():
            if line and not line[0].isspace():  # Recv-Q Send-Q local peer
                recv_q, _, _, peer = line.split()[:4]
                found[peer] = Connection(0, int(recv_q), 0)
            elif peer:  # its TCP info: bytes_received:N ... bytes_sent:N (absent when 0)
                counts = dict(re.findall(r"\b(bytes_received|bytes_sent):(\d+)", line))
                received = int(counts.get("bytes_received", 0))
                found[peer] = found[peer]._replace(
                    received=received, sent=int(counts.get("bytes_sent", 0))
                )
        return found

    def holds_a_request(self, before: dict[str, Connection]) -> bool:
        """Whether the server has read a request sent since `before` (`connections()`
        taken earlier) and not answered it yet, as a long-poll it holds: on some
        connection more bytes arrived, all of them were read, and nothing more went back."""
        for peer, now in self.connections().items():
            then = before.get(peer, Connection(0, 0, 0))
            if now.received > then.received and now.unread == 0 and now.sent == then.sent:
                return True
        return False

    def _log_text(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        server.kill()


def file_url(repo: str, path: str) -> str:
    """The native API URL path of a file."""
    return f"/v1/repos/{repo}/files/{quote_path(path)}"
