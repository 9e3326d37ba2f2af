"""`repomount serve` start-up: refusals with one clear line, --no-auth, a busy data dir."""

from __future__ import annotations

import json
import os
import pty
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
        (("--token-file", "SHARED_FILE"), None, "other users can read it (mode 0644); make it"),
        (("--token-file", "OPEN_FILE"), None, "others can change it (mode 0602)"),
        (("--host", ""), "t", "--host is empty"),  # (was every interface)
        (("--history", "0"), "t", "--history"),
        # (was a traceback once listening: OverflowError in the first collection)
        (("--history", "99999999999999999999"), "t", "--history must be at most"),
        (("--gc-interval", "-1"), "t", "--gc-interval"),
        (("--gc-grace", "nan"), "t", "--gc-grace"),
        (("--gc-now", "--gc-grace", "-5"), None, "--gc-grace"),
    ],
)
def test_bad_configurations_exit_2(
    tmp_path: Path, args: tuple[str, ...], token: str | None, says: str
) -> None:
    for name, text, mode in [
        ("token", "t\n", 0o600),
        ("empty", "\n", 0o600),
        ("shared", "t\n", 0o644),
        ("open", "t\n", 0o602),
    ]:
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(mode)
    files = {
        "TOKEN_FILE": "token",
        "EMPTY_FILE": "empty",
        "MISSING_FILE": "missing",
        "SHARED_FILE": "shared",
        "OPEN_FILE": "open",
    }
    args = tuple(str(tmp_path / files[a]) if a in files else a for a in args)
    done = serve("--data", str(tmp_path / "d"), "--port", "0", *args, token=token)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("repomount serve: error:")
    assert says in lines[0]


@pytest.mark.parametrize("flag", ["--max-file-size", "--max-pack-size"])
@pytest.mark.parametrize("value", ["inf", "1e400"])
def test_an_infinite_size_is_refused_by_the_parser(tmp_path: Path, flag: str, value: str) -> None:
    """Was a traceback (OverflowError: cannot convert float infinity to integer)."""
    done = serve("--data", str(tmp_path / "d"), "--port", "0", flag, value, token="t")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"repomount serve: error: argument {flag}: not a size: {value!r}"
    assert not (tmp_path / "d").exists()


def test_no_auth_on_loopback(server_factory: ServerFactory) -> None:
    live = server_factory(["--no-auth"])
    with httpx.Client(base_url=live.url) as anon:
        assert anon.post("/v1/repos", json={"name": "open"}).status_code == 201


def test_token_file_wins_over_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
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
    assert not (tmp_path / "other").exists()  # (never listened: the new store is gone)


def test_a_host_that_does_not_resolve_is_said_in_words(tmp_path: Path) -> None:
    """Was "unknown error -2": the EAI_ code of getaddrinfo read as an errno."""
    done = serve(
        "--data", str(tmp_path / "d"), "--port", "0", "--host", "nosuch.invalid", token="t"
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "repomount serve: error: cannot listen on nosuch.invalid:0: no such address"
    )
    assert "unknown error" not in line.lower()
    assert not (tmp_path / "d").exists()


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


# --------------------------------------------------------------------------- repomount repo


def repo_cmd(
    *args: str, token: str | None, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REPOMOUNT_TOKEN"}
    if token is not None:
        env["REPOMOUNT_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "repomount", "repo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=stdin,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("repomount: ")
    return line


def test_repo_create_list_delete(server: ServerProc) -> None:
    """Issue 16 #9: repos of repomount's server are made, listed and deleted by
    `repomount repo`, not curl; the token comes from REPOMOUNT_TOKEN, as for a mount."""
    url, token = server.url, server.token
    done = repo_cmd("create", f"{url}/notes", token=token)
    assert done.returncode == 0, done.stderr
    assert f"created {url}/notes" in done.stdout and f"repomount mount {url}/notes" in done.stdout
    with server.client() as c:
        assert c.get("/v1/repos/notes").json()["head"] == "0"
    done = repo_cmd("create", f"{url}/notes", token=token)
    assert done.returncode == 1 and f"repo 'notes' already exists on {url}" in _one_line(done)
    server.create_repo("other")

    done = repo_cmd("list", url, token=token)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert names == ["notes", "other"]
    listed = json.loads(repo_cmd("list", url, "--json", token=token).stdout)
    assert [(r["name"], r["head"]) for r in listed] == [("notes", "0"), ("other", "0")]

    done = repo_cmd("delete", f"{url}/notes", token=token)  # stdin is no terminal
    assert done.returncode == 2 and "--yes" in _one_line(done)
    done = repo_cmd("delete", f"{url}/notes", "--yes", token=token)
    assert done.returncode == 0 and f"deleted {url}/notes" in done.stdout
    with server.client() as c:
        assert c.get("/v1/repos/notes").status_code == 404
    done = repo_cmd("delete", f"{url}/notes", "--yes", token=token)
    assert done.returncode == 1 and f"no repo 'notes' on {url}" in _one_line(done)


def _read_all(fd: int) -> bytes:
    """What a pty's other side wrote, up to its close (EIO once it is gone)."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


def test_repo_delete_asks_on_a_terminal(server: ServerProc) -> None:
    server.create_repo("asked")
    # (Ctrl-D, an end of file, was a traceback: EOFError)
    for answer, deleted in ((b"n\n", False), (b"\x04", False), (b"y\n", True)):
        master, slave = pty.openpty()
        env = {**os.environ, "REPOMOUNT_TOKEN": server.token}
        proc = subprocess.Popen(
            [sys.executable, "-m", "repomount", "repo", "delete", f"{server.url}/asked"],
            env=env, stdin=slave, stdout=slave, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        seen = b""
        while b"[y/N]" not in seen:
            seen += os.read(master, 1024)
        os.write(master, answer)
        assert proc.wait(30) == (0 if deleted else 1)
        seen += _read_all(master)
        assert b"Traceback" not in seen and (deleted or b"not deleted" in seen), seen
        os.close(master)
        with server.client() as c:
            assert c.get("/v1/repos/asked").status_code == (404 if deleted else 200)


@pytest.mark.parametrize(
    ("case", "says", "code"),
    [
        ("no_token", "requires a token: set REPOMOUNT_TOKEN", 1),
        ("wrong_token", "the token was refused by http://127.0.0.1:", 1),
        ("unreachable", "cannot reach http://127.0.0.1:9", 1),
        ("bad_name", "refused the repo name: invalid repository name", 1),
        ("no_name", "no repo name after the host", 2),
        ("path_on_list", "a server's URL has no path", 2),
    ],
)
def test_repo_commands_say_what_went_wrong(
    server: ServerProc, case: str, says: str, code: int
) -> None:
    url, token = server.url, server.token
    args: tuple[str, ...] = ("create", f"{url}/fine")
    if case == "no_token":
        token = None
    elif case == "wrong_token":
        token = "wrong-token"
    elif case == "unreachable":
        args = ("list", "http://127.0.0.1:9")
    elif case == "bad_name":
        args = ("create", f"{url}/.hidden")
    elif case == "no_name":
        args = ("create", f"{url}/")
    elif case == "path_on_list":
        args = ("list", f"{url}/fine")
    done = repo_cmd(*args, token=token)
    assert done.returncode == code
    line = _one_line(done)
    assert says in line, line
    assert server.token not in done.stderr and "wrong-token" not in done.stderr
    with server.client() as c:
        assert c.get("/v1/repos").json()["repos"] == []  # nothing was made
