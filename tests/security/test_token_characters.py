"""A token no HTTP header can carry (a non-ASCII character, a pasted newline) is refused
once, in one line that does not repeat it: `repomount repo list` died with a traceback
(httpx's UnicodeEncodeError), a mount said only "'ascii' codec can't encode characters
in position 8-9", and a newline made every request fail as "cannot reach" the server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repomount.remotes.http import HttpClient
from support.mount import repomount
from support.server import ServerProc

BAD = ["s\u00e9cret\u20ac-TOKEN", "secret-TOKEN\n", "sec\x00ret-TOKEN", "\tsecret-TOKEN"]


@pytest.mark.parametrize("token", BAD)
def test_the_client_refuses_a_token_no_header_can_carry(token: str) -> None:
    with pytest.raises(ValueError, match="an HTTP header cannot carry") as e:
        HttpClient("http://127.0.0.1:9", token=token)
    assert "TOKEN" not in str(e.value)


def test_printable_tokens_are_taken() -> None:
    HttpClient("http://127.0.0.1:9", token="a-b_c.d~e/f+g=h i:j")


@pytest.mark.parametrize("token", BAD[:2])
def test_repo_commands_say_so_in_one_line(live: ServerProc, token: str) -> None:
    env = {**os.environ, "REPOMOUNT_TOKEN": token}
    r = repomount("repo", "list", live.url, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "REPOMOUNT_TOKEN" in r.stderr and "an HTTP header cannot carry" in r.stderr
    assert "TOKEN\n" not in r.stderr.replace("REPOMOUNT_TOKEN", "")


def test_a_mount_says_so_before_mounting(live: ServerProc, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {
        **os.environ,
        "REPOMOUNT_TOKEN": BAD[0],
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    r = repomount("mount", f"{live.url}/nope", str(mnt), env=env)
    assert r.returncode == 2, r.stderr
    assert "an HTTP header cannot carry" in r.stderr, r.stderr
    assert "TOKEN" not in r.stderr.replace("REPOMOUNT_TOKEN", ""), r.stderr


# (no NUL: an environment variable cannot hold one)
@pytest.mark.parametrize("token", [*(t for t in BAD if "\0" not in t), "secret-TOKEN "])
def test_the_server_refuses_a_token_no_client_could_send(tmp_path: Path, token: str) -> None:
    """`serve` took such a token from REPOMOUNT_TOKEN (a token file refused spaces
    already) and then refused every request, its own clients' included."""
    env = {**os.environ, "REPOMOUNT_TOKEN": token}
    r = repomount("serve", "--data", str(tmp_path / "data"), "--port", "0", env=env, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "no client could send it" in r.stderr
    assert "TOKEN" not in r.stderr.replace("REPOMOUNT_TOKEN", ""), r.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("token", ["secret-TOKEN ", " secret-TOKEN"])
def test_the_client_refuses_a_token_with_spaces_around_it(token: str) -> None:
    """h11 refuses a header value that ends in a space: every request failed as
    "cannot reach" the server. One before it reached the server as part of the token
    (401). `serve` refuses both (above); spaces inside a token are taken."""
    with pytest.raises(ValueError, match="an HTTP header cannot carry") as e:
        HttpClient("http://127.0.0.1:9", token=token)
    assert "TOKEN" not in str(e.value)
