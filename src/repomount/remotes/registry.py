"""SRC string -> remote adapter. The one place that knows which services exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urlsplit

from repomount.remotes.base import Remote
from repomount.remotes.native import NativeRemote

TOKEN_ENV = "REPOMOUNT_TOKEN"
ACCEPTED = (
    "http://HOST[:PORT]/REPO, https://HOST[:PORT]/REPO, relace:REPO_ID, "
    "terminaluse:FILESYSTEM_ID or oxen:NAMESPACE/REPO[@BRANCH]"
)

_DEFAULT_PORTS = {"http": 80, "https": 443}

Opener = Callable[[SplitResult, str, str | None], Remote]


def _open_native(url: SplitResult, src: str, token: str | None) -> Remote:
    def bad(why: str) -> ValueError:
        netloc = url.netloc
        shown = (
            src if "@" not in netloc else src.replace(netloc, "***@" + netloc.rpartition("@")[2])
        )
        return ValueError(f"bad remote {shown!r}: {why} (expected {ACCEPTED})")

    if url.username is not None or url.password is not None:
        raise bad(f"put the token in {TOKEN_ENV}, not in the URL")
    if not url.hostname:
        raise bad("no host")
    try:
        port = url.port
    except ValueError:
        raise bad("the port is not a number from 0 to 65535") from None
    if url.query or url.fragment:
        raise bad("no query or fragment allowed")
    repo = unquote(url.path.strip("/"))
    if not repo:
        raise bad("no repo name after the host")
    if "/" in repo:
        raise bad("the repo name is one path segment")
    host = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"  # IPv6
    if port == _DEFAULT_PORTS[url.scheme]:
        port = None  # one remote, one identity
    base = f"{url.scheme}://{host}" + (f":{port}" if port is not None else "")
    return NativeRemote(base, repo, token=token)


_OPENERS: dict[str, Opener] = {"http": _open_native, "https": _open_native}


def open_remote(src: str, *, token: str | None = None, endpoint: str | None = None) -> Remote:
    """The adapter for `src`. For repomount's server the token defaults to
    $REPOMOUNT_TOKEN; the hosted services read their own key variables, and `endpoint`
    overrides their API's base URL. Raises ValueError with a one-line message when
    `src` names no supported remote."""
    src = src.strip()
    scheme = src.partition(":")[0].lower()
    if scheme == "relace":
        from repomount.remotes.relace import open_relace

        return open_relace(src, endpoint=endpoint, token=token)
    if scheme == "terminaluse":
        from repomount.remotes.terminaluse import open_terminaluse

        return open_terminaluse(src, endpoint=endpoint, token=token)
    if scheme == "oxen":
        from repomount.remotes.oxen_source import open_oxen

        return open_oxen(src, endpoint=endpoint, token=token)
    url = urlsplit(src)
    opener = _OPENERS.get(url.scheme.lower())
    if opener is None:
        raise ValueError(f"unsupported remote {src!r}: expected {ACCEPTED}")
    if endpoint is not None:
        raise ValueError(
            "--endpoint is for relace:, terminaluse: and oxen: remotes; put the server in the URL"
        )
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return opener(url, src, token)
