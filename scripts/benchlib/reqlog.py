"""Request counts from the server's access log (`PUT /v1/repos/x/files/a 201 3ms`)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

LINE_RE = re.compile(r"^([A-Z]+) (\S+) (\d{3}) (\d+)ms$")

# route -> kind; the route is the method and the path with the repo and file named
KINDS = {
    "PUT files": "write",
    "DELETE files": "write",
    "PUT blobs": "write",
    "POST blobs": "write",  # a pack of blobs (a tar stream)
    "POST commits": "write",
    "GET tree": "list",
    "GET repo": "list",
    "GET repos": "list",
    "GET files": "read",
    "HEAD files": "read",
    "POST read": "read",
    "GET changes": "feed",
}


def route(method: str, path: str) -> str:
    parts = path.split("/")  # "", "v1", "repos", REPO, KIND, ...
    if parts[:3] != ["", "v1", "repos"]:
        return f"{method} {path}"
    if len(parts) == 3:
        return f"{method} repos"
    if len(parts) == 4:
        return f"{method} repo"
    return f"{method} {parts[4]}"


@dataclass
class Counts:
    total: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)  # "GET files 200" -> n
    server_ms: int = 0  # the sum of the logged durations

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            **{k: self.kinds.get(k, 0) for k in ("write", "list", "read", "feed", "other")},
            "server_ms": self.server_ms,
            "routes": dict(self.routes.most_common()),
        }

    def split(self) -> str:
        """`w/l/r/f`: writes, listings, reads, change-feed polls."""
        k = self.kinds
        s = f"{k.get('write', 0)}/{k.get('list', 0)}/{k.get('read', 0)}/{k.get('feed', 0)}"
        return s + (f"+{k['other']}" if k.get("other") else "")


def count(lines: list[str]) -> Counts:
    c = Counts()
    for line in lines:
        m = LINE_RE.match(line.strip())
        if not m:
            continue
        r = route(m[1], m[2])
        c.total += 1
        c.kinds[KINDS.get(r, "other")] += 1
        c.routes[f"{r} {m[3]}"] += 1
        c.server_ms += int(m[4])
    return c
