"""SRC string -> remote adapter. The one place that knows which services exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import SplitResult, unquote, urlsplit

from repomount.paths import control_character_problem
from repomount.remotes.base import Remote
from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts
from repomount.remotes.native import NativeRemote

TOKEN_ENV = "REPOMOUNT_TOKEN"
ACCEPTED = (
    "http://HOST[:PORT]/REPO, https://HOST[:PORT]/REPO, relace:REPO_ID, "
    "terminaluse:FILESYSTEM_ID, oxen:NAMESPACE/REPO[@BRANCH] or sentry:ORG/PROJECT/RELEASE"
)

ACCEPTED_NATIVE = "http://HOST[:PORT]/REPO or https://HOST[:PORT]/REPO"
ACCEPTED_SERVER = "http://HOST[:PORT] or https://HOST[:PORT]"

_DEFAULT_PORTS = {"http": 80, "https": 443}

Opener = Callable[[SplitResult, str, str | None, Timeouts], Remote]


def _open_native(url: SplitResult, src: str, token: str | None, timeouts: Timeouts) -> Remote:
    base, repo = _native_location(url, src, with_repo=True, what="remote", expected=ACCEPTED)
    return NativeRemote(base, repo, token=token, timeouts=timeouts)


def native_location(src: str, *, with_repo: bool = True) -> tuple[str, str]:
    """(base URL, repo name) of repomount's server named by `src`:
    `http(s)://HOST[:PORT]/REPO`, or with `with_repo=False` the server alone,
    `http(s)://HOST[:PORT]` (the name is then ""). Raises ValueError, one line."""
    src = src.strip()
    url = urlsplit(src)
    expected = ACCEPTED_NATIVE if with_repo else ACCEPTED_SERVER
    if url.scheme.lower() not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL {src!r}: expected {expected}")
    what = "repo URL" if with_repo else "server URL"
    return _native_location(url, src, with_repo=with_repo, what=what, expected=expected)


def _native_location(
    url: SplitResult, src: str, *, with_repo: bool, what: str, expected: str
) -> tuple[str, str]:
    def bad(why: str) -> ValueError:
        netloc = url.netloc
        shown = (
            src if "@" not in netloc else src.replace(netloc, "***@" + netloc.rpartition("@")[2])
        )
        return ValueError(f"bad {what} {shown!r}: {why} (expected {expected})")

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
    if with_repo and not repo:
        raise bad("no repo name after the host")
    if not with_repo and repo:
        raise bad("a server's URL has no path")
    if "/" in repo:
        raise bad("the repo name is one path segment")
    if repo in (".", ".."):
        raise bad(f"{repo!r} is not a repo name")
    if problem := control_character_problem(repo):
        raise bad(f"the repo name {problem}")
    scheme = url.scheme.lower()
    host = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"  # IPv6
    if port == _DEFAULT_PORTS[scheme]:
        port = None  # one remote, one identity
    base = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    return base, repo


_OPENERS: dict[str, Opener] = {"http": _open_native, "https": _open_native}


def open_remote(
    src: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    dist: str | None = None,
) -> Remote:
    """The adapter for `src`. For repomount's server the token defaults to
    $REPOMOUNT_TOKEN; the hosted services read their own key variables, and `endpoint`
    overrides their API's base URL; `timeouts` say how long the remote may take; `dist`
    chooses the files of one dist of a Sentry release.
    Raises ValueError with a one-line message when `src` names no supported remote."""
    src = src.strip()
    scheme = src.partition(":")[0].lower()
    if scheme == "sentry":
        from repomount.remotes.sentry_source import open_sentry

        return open_sentry(src, endpoint=endpoint, token=token, dist=dist, timeouts=timeouts)
    if dist is not None:
        raise ValueError("--dist is for sentry: remotes (the files of one dist of a release)")
    if scheme == "relace":
        from repomount.remotes.relace import open_relace

        return open_relace(src, endpoint=endpoint, token=token, timeouts=timeouts)
    if scheme == "terminaluse":
        from repomount.remotes.terminaluse import open_terminaluse

        return open_terminaluse(src, endpoint=endpoint, token=token, timeouts=timeouts)
    if scheme == "oxen":
        from repomount.remotes.oxen_source import open_oxen

        return open_oxen(src, endpoint=endpoint, token=token, timeouts=timeouts)
    url = urlsplit(src)
    opener = _OPENERS.get(url.scheme.lower())
    if opener is None:
        raise ValueError(f"unsupported remote {src!r}: expected {ACCEPTED}")
    if endpoint is not None:
        raise ValueError(
            "--endpoint is for relace:, terminaluse:, oxen: and sentry: remotes; "
            "put the server in the URL"
        )
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return opener(url, src, token, timeouts)
