"""A hosted service's base URL (`--endpoint`, or its environment variable), checked the
same way for every adapter: http(s), a host, a valid port, no credentials (the key
belongs in its environment variable), no query or fragment; a path only where the
service's API may live below one. A bad one is a one-line ValueError that never
repeats a secret."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def checked_url(
    url: str,
    *,
    what: str,
    secret_env: str,
    secret: str = "key",
    expected: str = "http(s)://HOST[:PORT][/PATH]",
    root_only: str | None = None,
) -> SplitResult:
    """The parts of `url`, or ValueError("bad {what} ...: why"). `root_only`: the reason
    shown when the URL has a path (the service's API is on the server's root)."""
    parts = urlsplit(url.strip())
    shown = url.strip() if "@" not in parts.netloc else "the URL given"  # may hold a secret

    def bad(why: str) -> ValueError:
        return ValueError(f"bad {what} {shown!r}: {why}")

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad(f"expected {expected}")
    if parts.username is not None or parts.password is not None:
        raise bad(f"put the {secret} in {secret_env}, not in the URL")
    if parts.query or parts.fragment:
        raise bad("no query or fragment allowed")
    if root_only is not None and parts.path.strip("/"):
        raise bad(root_only)
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise bad("the port is not a number from 0 to 65535") from None
    return parts
