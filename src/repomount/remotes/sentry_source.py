"""How a Sentry release is named: SRC `sentry:ORG/PROJECT/RELEASE` (a release of the
organization: `sentry:ORG//RELEASE`), the files of one dist with `--dist NAME`, the
server from `--endpoint`, else $SENTRY_URL, else https://sentry.io, and the token from
$SENTRY_AUTH_TOKEN (the variables sentry-cli reads)."""

from __future__ import annotations

import os
import re

from repomount.remotes.endpoint import checked_url
from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts
from repomount.remotes.sentry import DEFAULT_URL, TOKEN_ENV, SentryRemote

URL_ENV = "SENTRY_URL"
ACCEPTED = "sentry:ORG/PROJECT/RELEASE or sentry:ORG//RELEASE"
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_RELEASE = 200
MAX_DIST = 64
_BAD_RELEASE_CHARS = "\r\n\f\t\v\\/"


def parse(src: str) -> tuple[str, str | None, str]:
    """(org, project or None, release) of `src`, or a one-line ValueError."""
    src = src.strip()
    scheme, colon, rest = src.partition(":")
    if scheme.lower() != "sentry" or not colon:
        raise ValueError(f"bad remote {src!r}: expected {ACCEPTED}")
    if rest.startswith("//"):
        raise ValueError(f"bad remote {src!r}: no '//' after 'sentry:' (expected {ACCEPTED})")
    org, slash1, rest = rest.partition("/")
    project, slash2, release = rest.partition("/")
    if not (slash1 and slash2):
        raise ValueError(f"bad remote {src!r}: expected {ACCEPTED}")
    for what, slug in (("organization", org), ("project", project)):
        if (slug or what == "organization") and not SLUG.fullmatch(slug):
            raise ValueError(
                f"bad remote {src!r}: the {what} is a slug or id: letters, digits, '.', "
                f"'_' and '-' (expected {ACCEPTED})"
            )
    check_release(src, release)
    return org, project or None, release


def check_release(src: str, release: str) -> None:
    if not release:
        raise ValueError(f"bad remote {src!r}: no release after the project")
    if any(c in release for c in _BAD_RELEASE_CHARS) or any(ord(c) < 32 for c in release):
        raise ValueError(f"bad remote {src!r}: a release has no '/', '\\' or control characters")
    if len(release) > MAX_RELEASE:
        raise ValueError(f"bad remote {src!r}: a release is at most {MAX_RELEASE} characters")
    if release.strip() in ("", ".", "..") or release.strip().lower() == "latest":
        raise ValueError(f"bad remote {src!r}: {release!r} is no release Sentry allows")


def check_dist(dist: str) -> str:
    if not dist or len(dist) > MAX_DIST or any(ord(c) < 32 for c in dist):
        raise ValueError(f"bad --dist {dist!r}: 1 to {MAX_DIST} printable characters")
    return dist


def base_url(url: str) -> str:
    """The server's root URL, checked: Sentry's API is at /api/0 on its root."""
    parts = checked_url(
        url,
        what="Sentry URL",
        secret_env=TOKEN_ENV,
        secret="token",
        expected="http(s)://HOST[:PORT]",
        root_only="Sentry's API is on the server's root: no path, query or fragment",
    )
    return f"{parts.scheme}://{parts.netloc}"


def open_sentry(
    src: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    dist: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> SentryRemote:
    """The adapter for `src`; ValueError with a one-line message when it (the URL, the
    dist or a missing token) is unusable."""
    org, project, release = parse(src)
    url = base_url(endpoint or os.environ.get(URL_ENV) or DEFAULT_URL)
    if dist is not None:
        check_dist(dist)
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if not token:
        raise ValueError(f"{src.strip()} needs a Sentry auth token: set {TOKEN_ENV}")
    return SentryRemote(
        org, project, release, base_url=url, token=token, dist=dist, timeouts=timeouts
    )
