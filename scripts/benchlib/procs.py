"""The processes a bench run starts: the server, the delay proxy, mount daemons.

Every process is a child of the bench, recorded at start and stopped by its PID (TERM,
then KILL after a while); nothing is looked up or stopped by name.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
REPOMOUNT = [PYTHON, "-m", "repomount"]

_children: list[subprocess.Popen[bytes]] = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def spawn(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """TERM the process by its PID, KILL it if it has not exited in `timeout` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    for proc in reversed(list(_children)):
        stop(proc, 15)


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def size_of(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class Server:
    """`repomount serve` on 127.0.0.1 with a token; its stderr is the access log."""

    LISTEN_RE = re.compile(r"repomount serve: listening on http://([\d.]+):(\d+)")

    def __init__(self, data_dir: Path, token: str) -> None:
        self.data_dir = data_dir
        self.token = token
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self) -> None:
        offset = size_of(self.log_path)
        args = [*REPOMOUNT, "serve", "--data", str(self.data_dir), "--host", "127.0.0.1"]
        self.proc = spawn([*args, "--port", "0"], self.log_path, {"REPOMOUNT_TOKEN": self.token})
        proc = self.proc

        def listening() -> re.Match[str] | None:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{read_from(self.log_path, offset)}")
            return self.LISTEN_RE.search(read_from(self.log_path, offset))

        wait_for(listening, 30, "repomount serve to listen")
        match = listening()
        assert match is not None
        self.port = int(match[2])
        self.url = f"http://127.0.0.1:{self.port}"

    def mark(self) -> int:
        """A position in the access log; `lines(a, b)` are the lines logged in between."""
        return size_of(self.log_path)

    def lines(self, start: int, end: int | None = None) -> list[str]:
        with self.log_path.open("rb") as f:
            f.seek(start)
            raw = f.read() if end is None else f.read(max(0, end - start))
        return raw.decode("utf-8", "replace").splitlines()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


class DelayProxy:
    """scripts/delayproxy.py in front of the server: the emulated link."""

    def __init__(self, upstream_port: int, rtt_ms: float, log_path: Path) -> None:
        self.upstream_port = upstream_port
        self.rtt_ms = rtt_ms
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        offset = size_of(self.log_path)
        script = str(ROOT / "scripts" / "delayproxy.py")
        args = [PYTHON, "-u", script, "--upstream", f"127.0.0.1:{self.upstream_port}"]
        self.proc = spawn([*args, "--rtt", str(self.rtt_ms)], self.log_path)
        pattern = re.compile(r"delayproxy: listening on [\d.]+:(\d+)")
        wait_for(lambda: pattern.search(read_from(self.log_path, offset)), 15, "the delay proxy")
        match = pattern.search(read_from(self.log_path, offset))
        assert match is not None
        self.port = int(match[1])

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, 10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(len(p) > 1 and p[1] == real for p in (line.split() for line in f))


class Mount:
    """`repomount mount -f` in a child process (the child is the FUSE daemon), with an
    empty cache and state directory of its own."""

    def __init__(self, src: str, path: Path, work: Path, token: str, extra: list[str]) -> None:
        self.src = src
        self.path = path
        self.work = work
        self.env = {"REPOMOUNT_TOKEN": token}
        self.extra = extra
        self.log_path = work / "mount.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        args = [
            *REPOMOUNT,
            "mount",
            self.src,
            str(self.path),
            "-f",
            "--cache-dir",
            str(self.work / "cache"),
            "--state-dir",
            str(self.work / "state"),
            *self.extra,
        ]
        offset = size_of(self.log_path)
        self.proc = spawn(args, self.log_path, self.env)
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mount exited {proc.returncode}:\n{self.log_tail(offset)}")
            return "repomount: mounted" in read_from(self.log_path, offset) and is_mounted(
                self.path
            )

        wait_for(ready, timeout, f"the mount on {self.path}")

    def log_tail(self, offset: int = 0) -> str:
        return read_from(self.log_path, offset)[-4000:]

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mib(self) -> float:
        """VmHWM of the daemon: its peak resident memory since it started."""
        with open(f"/proc/{self.pid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*REPOMOUNT, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def sync(self, timeout: float = 900) -> None:
        """What `repomount sync` does: returns once the server acknowledged every change.
        Asked on the control socket from this process (the CLI would add ~0.3 s of
        Python start-up to every durable time); the CLI when that is not importable."""
        try:
            from repomount import control
        except ImportError:
            r = self.cli("sync", str(self.path), "--timeout", str(timeout), timeout=timeout + 30)
            if r.returncode != 0:
                raise RuntimeError(
                    f"repomount sync: {r.stderr.strip()}\n{self.log_tail()}"
                ) from None
            return
        reply = control.request(self.path, "sync", wait=timeout + 5, timeout=timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"repomount sync: {reply}\n{self.log_tail()}")

    def unmount(self) -> None:
        """`repomount unmount` (uploads what is pending), then wait for the daemon."""
        if self.proc is None:
            return
        if self.proc.poll() is None and is_mounted(self.path):
            r = self.cli("unmount", str(self.path), timeout=300)
            if r.returncode != 0:
                log(f"unmount {self.path}: {r.stderr.strip()}")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        stop(self.proc)
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False)


def drop_caches() -> bool:
    """sync, then drop the page, dentry and inode caches (root only)."""
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_shell(cmd: str, timeout: float = 1800) -> tuple[float, str]:
    """Run `cmd` with bash, timed; returns (seconds, stdout). Fails on a non-zero exit."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"`{cmd}` exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return elapsed, r.stdout
