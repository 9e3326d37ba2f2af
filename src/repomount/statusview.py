"""A mount's status in words: what `repomount status` prints and `sync`'s progress line.

Pure formatting of the JSON the mount answers (vfs/core.py `status`, counted per change
as vfs/pending.py says); loads nothing else of repomount.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

LISTED = 10  # example lines per list; the rest is "... and N more"

_OPS = {  # op -> (one, several) as a pending count says them
    "write": ("file written", "files written"),
    "symlink": ("link", "links"),
    "mkdir": ("directory made", "directories made"),
    "delete": ("deletion", "deletions"),
    "rename": ("rename", "renames"),
}


def plural(n: int, one: str, several: str | None = None) -> str:
    return f"{n} {one if n == 1 else several or one + 's'}"


def size(n: int) -> str:
    """1023 -> "1023 B", 1536 -> "1.5 KiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """4.2 -> "4 s", 300 -> "5 min", 7200 -> "2 h", 259200 -> "3 d"."""
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def moment(at: float, now: float) -> str:
    """A past time as a user reads it: "14:02:11, 5 min ago"."""
    same_day = time.localtime(at)[:3] == time.localtime(now)[:3]
    clock = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", time.localtime(at))
    return f"{clock}, {duration(now - at)} ago"


def connection(status: dict[str, Any], now: float) -> str:
    """ "online (since 14:02:11, 5 min ago)" / "offline (since ...): changes wait"."""
    online = bool(status.get("online"))
    since = status.get("online_since" if online else "offline_since")
    when = f" (since {moment(since, now)})" if isinstance(since, int | float) else ""
    if online:
        return f"online{when}"
    return f"offline{when}: reads come from the cache, changes wait in the journal"


def pending_headline(status: dict[str, Any]) -> str:
    """ "3 changes (2 files written, 1 directory made), 1.2 KiB to upload, the oldest
    from 4 s ago" or "none: everything is uploaded"."""
    count = int(status.get("pending_changes") or 0)
    if not count:
        return "none: everything is uploaded"
    by_op = status.get("pending_by_op") or {}
    kinds = ", ".join(plural(n, *_OPS.get(op, (op, op + "s"))) for op, n in by_op.items())
    parts = [plural(count, "change") + (f" ({kinds})" if kinds else "")]
    parts.append(f"{size(int(status.get('pending_bytes') or 0))} to upload")
    oldest = status.get("pending_oldest_age")
    if isinstance(oldest, int | float):
        parts.append(f"the oldest from {duration(oldest)} ago")
    return ", ".join(parts)


def changes_named(status: dict[str, Any]) -> str:
    """ "2 changes (new1.txt, new2.txt)": every change counted (as `pending_headline`),
    each path they touch named once, LISTED names at most."""
    pending = status.get("pending") or []
    count = int(status.get("pending_changes", len(pending)))
    names = list(dict.fromkeys(str(e.get("path")) for e in pending))
    text = ", ".join(names[:LISTED])
    if len(names) > LISTED or count > len(pending):
        text += ", and more"
    return plural(count, "change") + (f" ({text})" if names else "")


def held_after_conflict(paths: Sequence[str]) -> str:
    """What to say of changes `--on-conflict fail` holds: every mount tries them again
    and they conflict again, so only another policy settles them (semantics.md)."""
    names = ", ".join(paths[:LISTED]) + (", and more" if len(paths) > LISTED else "")
    one = len(paths) == 1
    return (
        f"{names} lost a conflict and {'is' if one else 'are'} held under --on-conflict "
        f"fail: each mount tries {'it' if one else 'them'} again, to conflict again; to "
        "settle, mount again with --on-conflict keep-both (the local version is uploaded "
        "as a conflict copy beside the remote's), mine (it overwrites the remote's) or "
        "theirs (the remote's stays; the local version is kept in the state directory's "
        "conflicts/)"
    )


def pending_line(entry: dict[str, Any], *, online: bool = False) -> str:
    """`  write   src/a.txt  (6 B, 4 s ago, held, try 1: Conflict: ...)`. A transient
    failure while the remote is unreachable is the same for every change and said once,
    as the connection and the last error; a change's own error is said on its line, and
    so is a transient one while the remote answers (`online`): a server that takes
    everything but this change's content (its disk full: 507) answers other requests,
    which clear the mount's last error."""
    name = str(entry.get("path"))
    if entry.get("to"):
        name += f" -> {entry['to']}"
    notes = []
    if entry.get("op") == "write":
        notes.append(size(int(entry.get("bytes") or 0)))
    notes.append(f"{duration(float(entry.get('age') or 0))} ago")
    if entry.get("state") == "held":
        notes.append("held")
    if entry.get("tries"):
        notes.append(f"try {entry['tries']}")
    detail = ", ".join(notes)
    error = entry.get("error")
    if error and (online or not str(error).startswith("Unavailable:")):
        detail += f": {error}"
    return f"  {entry.get('op', '?'):<7} {name}  ({detail})"


def pending_lines(status: dict[str, Any]) -> list[str]:
    """A status's pending changes, one line each, LISTED at most."""
    pending = status.get("pending") or []
    online = bool(status.get("online", True))
    return bounded(
        pending,
        int(status.get("pending_changes", len(pending))),
        lambda e: pending_line(e, online=online),
        " (repomount status --json lists all)",
    )


def bounded(
    items: Sequence[Any], total: int, line: Callable[[Any], str], more: str = ""
) -> list[str]:
    """At most LISTED lines for `items`, then "... and N more" for the rest of `total`."""
    lines = [line(item) for item in items[:LISTED]]
    rest = total - len(lines)
    if rest > 0:
        lines.append(f"  ... and {rest} more{more}")
    return lines


def render(status: dict[str, Any], now: float) -> list[str]:
    """The lines of `repomount status` (without --json)."""
    lines = [f"remote:     {status.get('remote')}"]
    lines.append(f"connection: {connection(status, now)}")
    lines.append(f"pending:    {pending_headline(status)}")
    lines += pending_lines(status)

    conflicts = status.get("conflicts") or []
    lines.append(f"conflicts:  {len(conflicts) or 'none'}")
    newest_first = list(reversed(conflicts))
    lines += bounded(newest_first, len(conflicts), lambda c: _conflict_line(c, now))

    aside = status.get("set_aside") or []
    lines.append(
        f"set aside:  {len(aside) or 'none'}"
        + (" (not sent; listed in set-aside.txt in the state dir)" if aside else "")
    )
    lines += bounded(aside, len(aside), lambda a: _aside_line(a, now))

    error, at = status.get("last_error"), status.get("last_error_at")
    if error:
        when = f" (at {moment(at, now)})" if isinstance(at, int | float) else ""
        lines.append(f"last error: {error}{when}")
    else:
        lines.append("last error: none")

    local = status.get("local_only") or []
    lines.append(
        f"local only: {len(local) or 'none'}"
        + (" (kept on this disk, never uploaded: --local-only)" if local else "")
    )
    lines += bounded(local, len(local), lambda p: f"  {p}")

    lines.append(
        f"mount:      {plural(int(status.get('open_files') or 0), 'open file')}, "
        f"{plural(int(status.get('inodes') or 0), 'inode')}, "
        f"{size(int(status.get('cache_bytes') or 0))} cached"
    )
    lines.append(f"state dir:  {status.get('state_dir')}")
    return lines


def _conflict_line(c: dict[str, Any], now: float) -> str:
    at = c.get("time")
    when = f", at {moment(at, now)}" if isinstance(at, int | float) else ""
    return f"  {c.get('path')}: {c.get('resolution')} ({c.get('policy')}{when})"


def _aside_line(a: dict[str, Any], now: float) -> str:
    name = str(a.get("path")) + (f" -> {a['to']}" if a.get("to") else "")
    at = a.get("at")
    when = f" (at {moment(at, now)})" if isinstance(at, int | float) else ""
    return f"  {a.get('op')} {name}: {a.get('reason')}{when}"


def progress(status: dict[str, Any], now: float) -> str:
    """`sync`'s line on a terminal: what is left, and whether it is moving."""
    count = int(status.get("pending_changes") or 0)
    left = f"{plural(count, 'change')}, {size(int(status.get('pending_bytes') or 0))} left"
    if status.get("online"):
        return f"uploading: {left}"
    since = status.get("offline_since")
    when = f" since {moment(since, now)}" if isinstance(since, int | float) else ""
    return f"waiting for the remote (offline{when}): {left}"
