"""How `oxen:NS/REPO[@BRANCH]` is read: the SRC string, the server's URL, and the token
and commit author Oxen's own client keeps in ~/.config/oxen (read only, never logged)."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts
from repomount.remotes.oxen import DEFAULT_URL, OxenRemote

SRC_RE = re.compile(
    r"(?P<ns>[A-Za-z0-9][A-Za-z0-9_.-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<branch>.+))?"
)
ACCEPTED = "oxen:NAMESPACE/REPO[@BRANCH]"


def open_oxen(
    src: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> OxenRemote:
    """The adapter for `oxen:NS/REPO[@BRANCH]`. The server is `endpoint`, else
    $OXEN_API_URL, else $OXEN_HOST (a host, https), else hub.oxen.ai; the token is
    `token`, else $OXEN_API_KEY, else the one ~/.config/oxen/auth_config.toml keeps for
    that host. Raises ValueError with a one-line message."""
    src = src.strip()
    scheme, colon, rest = src.partition(":")
    if scheme.lower() != "oxen" or not colon:
        raise ValueError(f"bad remote {src!r}: expected {ACCEPTED}")
    if rest.startswith("//"):
        raise ValueError(f"bad remote {src!r}: no '//' after 'oxen:' (expected {ACCEPTED})")
    match = SRC_RE.fullmatch(rest)
    if match is None:
        raise ValueError(
            f"bad remote {src!r}: a namespace and a repository name are letters, digits, "
            f"'_', '.' and '-' (expected {ACCEPTED})"
        )
    branch = match.group("branch") or "main"
    if any(not p or p.startswith(".") for p in branch.split("/")) or re.search(
        r"[\s~^:?*\[\\]", branch
    ):
        raise ValueError(f"bad remote {src!r}: {branch!r} is no branch name (expected {ACCEPTED})")
    base_url = _base_url(endpoint)
    host = urlsplit(base_url).netloc
    key = token or os.environ.get("OXEN_API_KEY") or _config_token(host)
    return OxenRemote(
        match.group("ns"),
        match.group("name"),
        branch=branch,
        base_url=base_url,
        token=key or None,
        author=_config_author(),
        timeouts=timeouts,
    )


def _base_url(endpoint: str | None) -> str:
    url = (endpoint or os.environ.get("OXEN_API_URL") or "").strip()
    if not url and os.environ.get("OXEN_HOST"):
        host = os.environ["OXEN_HOST"].strip()
        url = host if "://" in host else f"https://{host}"
    url = url or DEFAULT_URL
    parts = urlsplit(url)
    shown = url if "@" not in parts.netloc else "the URL given"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad Oxen server URL {shown!r}: expected http(s)://HOST[:PORT]")
    if parts.username is not None or parts.password is not None:
        raise ValueError("bad Oxen server URL: put the token in OXEN_API_KEY, not in the URL")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"bad Oxen server URL {shown!r}: no path, query or fragment")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"bad Oxen server URL {shown!r}: bad port") from None
    return f"{parts.scheme}://{parts.netloc}"


def _config_dir() -> Path:
    return Path(os.environ.get("HOME") or Path.home()) / ".config" / "oxen"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _config_token(host: str) -> str | None:
    """The token Oxen's own client keeps for `host` (read only, never logged)."""
    for entry in _read_toml(_config_dir() / "auth_config.toml").get("host_configs") or []:
        if isinstance(entry, dict) and entry.get("host") == host and entry.get("auth_token"):
            return str(entry["auth_token"])
    return None


def _config_author() -> tuple[str, str] | None:
    """(name, email) commits are signed with: $OXEN_AUTHOR_NAME / $OXEN_AUTHOR_EMAIL,
    else Oxen's user config (what its own client signs with); None: the default,
    `repomount <host>`."""
    env_name = os.environ.get("OXEN_AUTHOR_NAME", "").strip()
    if env_name:
        return env_name, os.environ.get("OXEN_AUTHOR_EMAIL", "").strip()
    user = _read_toml(_config_dir() / "user_config.toml")
    name, email = user.get("name"), user.get("email")
    if isinstance(name, str) and name:
        return name, email if isinstance(email, str) else ""
    return None
