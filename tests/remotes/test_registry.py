"""SRC strings -> adapters, and the one-line errors a user sees for bad ones."""

from __future__ import annotations

import pytest

from repomount.remotes.errors import Unauthorized
from repomount.remotes.native import NativeRemote
from repomount.remotes.registry import open_remote
from support.server import ServerProc


@pytest.mark.parametrize(
    ("src", "identity"),
    [
        ("http://127.0.0.1:8750/demo", "native:http://127.0.0.1:8750/demo"),
        ("http://127.0.0.1:8750/demo/", "native:http://127.0.0.1:8750/demo"),
        ("HTTPS://Example.COM/r", "native:https://example.com/r"),
        ("https://example.com:443/r", "native:https://example.com/r"),
        ("http://[::1]:9000/r", "native:http://[::1]:9000/r"),
        ("http://h:1/my%20repo", "native:http://h:1/my repo"),
    ],
)
async def test_http_urls_open_the_native_adapter(src: str, identity: str) -> None:
    remote = open_remote(src, token="t")
    try:
        assert isinstance(remote, NativeRemote)
        assert remote.identity == identity
        assert remote.capabilities.atomic_batch and remote.capabilities.change_feed
    finally:
        await remote.aclose()


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("ftp://h/r", "unsupported remote"),
        ("demo", "unsupported remote"),
        ("/srv/repo", "unsupported remote"),
        ("s3:bucket", "unsupported remote"),
        ("http://h", "no repo name"),
        ("http://h/", "no repo name"),
        ("http://h/a/b", "one path segment"),
        ("http:/r", "no host"),
        ("http://h:99999/r", "port"),
        ("http://h/r?x=1", "no query"),
    ],
)
def test_bad_sources_say_what_is_accepted(src: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        open_remote(src)
    message = str(info.value)
    assert "\n" not in message
    assert "http://HOST[:PORT]/REPO" in message and "https://" in message


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("relace:", "no repo id"),
        ("terminaluse:", "no filesystem id"),
        ("oxen:abc", "a namespace and a repository name"),
    ],
)
def test_bad_hosted_sources_say_why(src: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        open_remote(src)
    assert "\n" not in str(info.value)


def test_a_token_in_the_url_is_refused_and_not_echoed() -> None:
    with pytest.raises(ValueError, match="REPOMOUNT_TOKEN") as info:
        open_remote("http://user:hunter2@h:1/r")
    assert "hunter2" not in str(info.value)


async def test_token_comes_from_the_environment(
    server: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.create_repo("r")
    src = f"{server.url}/r"
    monkeypatch.setenv("REPOMOUNT_TOKEN", server.token)
    from_env = open_remote(src)
    overridden = open_remote(src, token="not-the-token")
    monkeypatch.setenv("REPOMOUNT_TOKEN", "")
    without = open_remote(src)
    try:
        assert (await from_env.info()).name == "r"
        with pytest.raises(Unauthorized, match="the token was refused"):
            await overridden.info()
        with pytest.raises(Unauthorized, match="requires a token"):
            await without.info()
        assert server.token not in repr(from_env)
    finally:
        for remote in (from_env, overridden, without):
            await remote.aclose()


@pytest.mark.parametrize(
    ("src", "env", "kind"),
    [
        ("relace:repo1", "RELACE_API_KEY", "RelaceRemote"),
        ("terminaluse:fs1", "TERMINALUSE_API_KEY", "TerminalUseRemote"),
    ],
)
async def test_hosted_services_take_an_endpoint(
    src: str, env: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, "k-123")
    remote = open_remote(src, endpoint="http://127.0.0.1:1/x")
    try:
        assert type(remote).__name__ == kind
        assert "k-123" not in repr(remote)
    finally:
        await remote.aclose()


def test_endpoint_is_refused_for_the_native_server() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        open_remote("http://h/r", endpoint="http://other")
