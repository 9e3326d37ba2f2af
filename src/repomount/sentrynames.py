"""Sentry release file names as paths, the one mapping the Sentry adapter and the
server's Sentry face share: names are flat strings (`~/static/app.js`,
`https://cdn.example/app.js`), shown as paths split on `/`, a URL's `//` as one `/`.
"""

from __future__ import annotations

import re

from repomount.paths import InvalidPathError, validate_path

_SCHEME = re.compile(r"([^/]*:)//(.+)")


def path_of_name(name: str) -> str | None:
    """The path a file name is shown (and kept) at, or None when no path can be it."""
    url = _SCHEME.fullmatch(name)
    path = f"{url[1]}/{url[2]}" if url else name
    first, slash, _ = path.partition("/")
    if not url and slash and first.endswith(":"):
        return None  # "x:/y" would read back as "x://y"
    try:
        return validate_path(path)
    except InvalidPathError:
        return None


def name_of_path(path: str) -> str:
    """The file name a path stands for (the inverse of `path_of_name`)."""
    first, slash, rest = path.partition("/")
    return f"{first}//{rest}" if slash and first.endswith(":") else path
