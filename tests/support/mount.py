"""A real `repomount mount` in a subprocess, for tests; always unmounted at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from support.util import wait_until


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == real for line in f if len(line.split()) > 1)


def force_unmount(path: Path) -> None:
    """fusermount3 -u, then lazily if something still holds the mount."""
    if not is_mounted(path):
        return
    subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, check=False)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True, check=False)


def repomount(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repomount", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class MountProc:
    def __init__(
        self,
        src: str,
        path: Path,
        *,
        work_dir: Path,
        token: str | None,
        repo: str = "",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.src = src
        self.repo = repo
        self.path = path
        self.work_dir = work_dir
        self.cache_dir = work_dir / "cache"
        self.state_dir = work_dir / "state"
        self.log_path = work_dir / "mount.log"
        self.env = {**os.environ}
        if token is not None:
            self.env["REPOMOUNT_TOKEN"] = token
        self.env.update(env or {})
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "repomount", "mount", self.src, str(self.path), "-f",
            "--cache-dir", str(self.cache_dir), "--state-dir", str(self.state_dir),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 20) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        offset = log.tell()
        self.proc = subprocess.Popen(
            self.command(), env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        proc = self.proc

        def mounted() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mount exited with {proc.returncode}:\n{self.log()}")
            output = self.log_path.read_bytes()[offset:]
            return b"repomount: mounted" in output and is_mounted(self.path)

        try:
            wait_until(mounted, timeout, "the mount to be ready")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"mount not ready after {timeout}s:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def sync(self, timeout: float = 60) -> None:
        """`repomount sync`: returns once the remote has every change made so far."""
        r = repomount("sync", str(self.path), "--timeout", str(timeout), env=self.env)
        if r.returncode != 0:
            raise AssertionError(f"repomount sync failed: {r.stderr}\n{self.log()}")

    def unmount(self) -> subprocess.CompletedProcess[str]:
        """`repomount unmount`, as a user would run it; waits for the daemon to exit."""
        result = repomount("unmount", str(self.path), env=self.env)
        if result.returncode == 0 and self.proc is not None:
            self.proc.wait(30)
        return result

    def stop(self) -> int | None:
        """SIGTERM (drain, then unmount); then make sure nothing is left mounted."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        elif self.proc is not None:
            code = self.proc.returncode
        force_unmount(self.path)
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        force_unmount(self.path)

    def rss_peak_kib(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM")
