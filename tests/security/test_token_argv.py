"""Issue 18 finding 4: `repomount serve --token T` showed the token to every local user
(/proc/PID/cmdline is world-readable, so `ps` lists it).

Now no secret goes on a command line: `--token` is refused with a message naming the
alternatives, the server reads its token from REPOMOUNT_TOKEN or `--token-file PATH`
(`-` for stdin), and a mount, daemonized or not, takes its key from the environment
only (the daemon is a fork of the command, so its argv is the command's).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from support.mount import force_unmount, repomount
from support.server import READY_RE
from support.util import wait_until


def _env_without_token(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REPOMOUNT_TOKEN"}
    return {**env, **extra}


def _command_lines_showing(secret: bytes) -> list[str]:
    """Every process whose command line holds `secret`, as `ps` would show it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if secret in cmdline:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {shown}")
    return found


def test_serve_refuses_a_token_on_the_command_line(tmp_path: Path) -> None:
    token = secrets.token_hex(16)
    done = subprocess.run(
        [sys.executable, "-m", "repomount", "serve", "--data", str(tmp_path / "d"),
         "--port", "0", "--token", token],
        env=_env_without_token(), capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--token-file" in lines[0] and "REPOMOUNT_TOKEN" in lines[0]
    assert token not in done.stderr


def test_no_process_shows_the_token(tmp_path: Path) -> None:
    """A server given its token on stdin and a daemonized mount given it in the
    environment: no command line anywhere holds it, while both use it."""
    token = secrets.token_hex(16)
    log_path = tmp_path / "server.log"
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "repomount", "serve", "--data", str(tmp_path / "d"),
             "--port", "0", "--token-file", "-"],
            env=_env_without_token(), stdin=subprocess.PIPE, stdout=log, stderr=log,
        )  # fmt: skip
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env_without_token(
        REPOMOUNT_TOKEN=token,
        XDG_STATE_HOME=str(tmp_path / "xs"),
        XDG_CACHE_HOME=str(tmp_path / "xc"),
    )
    try:
        assert server.stdin is not None
        server.stdin.write(token.encode() + b"\n")
        server.stdin.close()

        def listening() -> re.Match[str] | None:
            assert server.poll() is None, log_path.read_text()
            return READY_RE.search(log_path.read_text())

        ready = wait_until(listening, 15, "the server to listen")
        url = f"{ready[1]}:{ready[2]}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
            c.post("/v1/repos", json={"name": "t"}).raise_for_status()
            assert c.get("/v1/repos", headers={"Authorization": "Bearer nope"}).status_code == 401

        r = repomount("mount", f"{url}/t", str(mnt), env=env, timeout=60)  # daemonized
        assert r.returncode == 0, r.stderr
        (mnt / "f.txt").write_bytes(b"x")
        assert repomount("sync", str(mnt), env=env).returncode == 0
        assert _command_lines_showing(token.encode()) == []
    finally:
        repomount("unmount", str(mnt), "--drain-timeout", "10", env=env)
        force_unmount(mnt)
        server.kill()
        server.wait(10)
