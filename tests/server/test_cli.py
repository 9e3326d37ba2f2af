"""`repomount serve` start-up: refusals with one clear line, --no-auth, a busy data dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.server import ServerFactory, ServerProc


def serve(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REPOMOUNT_TOKEN"}
    if token is not None:
        env["REPOMOUNT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "repomount", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "token", "says"),
    [
        ((), None, "no token"),
        (("--no-auth", "--host", "0.0.0.0"), None, "only allowed on a loopback host"),
        (("--no-auth", "--token-file", "TOKEN_FILE"), None, "not both"),
        (("--token-file", "EMPTY_FILE"), None, "holds no token"),
        (("--token-file", "MISSING_FILE"), None, "cannot read the token file"),
        (("--history", "0"), "t", "--history"),
        (("--gc-interval", "-1"), "t", "--gc-interval"),
        (("--gc-grace", "nan"), "t", "--gc-grace"),
        (("--gc-now", "--gc-grace", "-5"), None, "--gc-grace"),
    ],
)
def test_bad_configurations_exit_2(
    tmp_path: Path, args: tuple[str, ...], token: str | None, says: str
) -> None:
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "empty").write_text("\n")
    files = {"TOKEN_FILE": "token", "EMPTY_FILE": "empty", "MISSING_FILE": "missing"}
    args = tuple(str(tmp_path / files[a]) if a in files else a for a in args)
    done = serve("--data", str(tmp_path / "d"), "--port", "0", *args, token=token)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("repomount serve: error:")
    assert says in lines[0]


def test_no_auth_on_loopback(server_factory: ServerFactory) -> None:
    live = server_factory(["--no-auth"])
    with httpx.Client(base_url=live.url) as anon:
        assert anon.post("/v1/repos", json={"name": "open"}).status_code == 201


def test_token_file_wins_over_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    live = ServerProc(
        tmp_path / "d", token="from-env", extra_args=["--token-file", str(token_file)]
    )
    live.start()
    try:
        with httpx.Client(base_url=live.url) as c:
            r = c.get("/v1/repos", headers={"Authorization": "Bearer from-file"})
            assert r.status_code == 200
            r = c.get("/v1/repos", headers={"Authorization": "Bearer from-env"})
            assert r.status_code == 401
    finally:
        live.stop()


def test_busy_data_dir_and_port(server: ServerProc, tmp_path: Path) -> None:
    done = serve("--data", str(server.data_dir), "--port", "0", token="t")
    assert done.returncode == 1
    assert "in use by another repomount server" in done.stderr
    done = serve("--data", str(tmp_path / "other"), "--port", str(server.port), token="t")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    # Issue 16 #7: what went wrong, not "Exceptions from Trio nursery (1 sub-exception)".
    assert "cannot listen" in line and "address already in use" in line, line
    assert "Trio" not in line


def test_log_file_takes_the_request_log(server_factory: ServerFactory, tmp_path: Path) -> None:
    """Issue 16 #9: `serve --log-file PATH` writes the request log there, not to stderr."""
    log_file = tmp_path / "requests.log"
    live = server_factory(["--log-file", str(log_file)])
    live.create_repo("logged")
    [line] = log_file.read_text().splitlines()
    assert re.fullmatch(r"POST /v1/repos 201 \d+ms", line), line
    assert oct(log_file.stat().st_mode & 0o777) == oct(0o600)  # it names every path written
    assert live.requests() == []  # nothing of it on the terminal
    live.restart()  # appended, never truncated
    live.create_repo("again")
    assert len(log_file.read_text().splitlines()) == 2


def test_quiet_serves_without_a_request_log(server_factory: ServerFactory) -> None:
    """Issue 16 #9: `serve --quiet` logs no request; start and stop lines remain."""
    live = server_factory(["--quiet"])
    live.create_repo("quiet")
    with live.client() as c:
        assert c.get("/v1/repos/quiet").status_code == 200
        assert c.get("/v1/repos/nope").status_code == 404
    assert live.requests() == []
    live.stop()
    assert "listening on" in live.log_path.read_text()
