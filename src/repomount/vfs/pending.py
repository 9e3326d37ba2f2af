"""What is pending, as `repomount status` and `sync` count it: per change the remote will
see, not per journal row.

The journal keeps one row per step (a new file is its create and then its content; each
close of an edited file adds a write), and sends the coalesced list (coalesce.py). A
*change* here is one entry of that list: one path created, written, linked, made,
deleted or renamed, however many rows stand for it. A file created and written is one
change; so is a file written ten times since it was last sent; a `mkdir` is one change
of its own; a file created and deleted before anything was sent is none. Its bytes are
the size of the content it will upload (the newest one), its age that of its oldest row.

Pure over frozen records plus a size lookup, so a large journal is summarised in a
worker thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from repomount.vfs.coalesce import coalesce
from repomount.vfs.records import Record


@dataclass(frozen=True)
class PendingSummary:
    changes: list[dict[str, object]]  # oldest first; at most `limit` of them
    count: int  # every change
    bytes: int  # content still to upload, every change
    oldest_age: float | None  # seconds since the oldest change began; None: none pending
    rows: int  # journal rows behind them
    by_op: dict[str, int]  # change count per op: {"write": 3, "mkdir": 1}

    def as_status(self) -> dict[str, object]:
        """The keys `repomount status` answers with."""
        return {
            "pending": self.changes,
            "pending_changes": self.count,
            "pending_bytes": self.bytes,
            "pending_oldest_age": self.oldest_age,
            "pending_rows": self.rows,
            "pending_by_op": self.by_op,
        }


def summarize(
    records: Sequence[Record],
    blob_size: Callable[[str], int],
    now: float,
    *,
    limit: int | None = None,
) -> PendingSummary:
    """The pending changes of `records` (the journal, in order). `blob_size(name)` is the
    size of a content file (0 once it is gone); `limit` bounds the entries listed."""
    by_id = {r.id: r for r in records}
    entries: list[tuple[float, dict[str, object]]] = []
    total = 0
    for op in coalesce(list(records)).ops:
        rows = [by_id[i] for i in op.ids if i in by_id]
        created = min((r.created for r in rows), default=now)
        size = blob_size(op.blob) if op.op == "write" and op.blob else 0
        total += size
        errors = [r.last_error for r in rows if r.last_error]
        entry: dict[str, object] = {
            "op": op.op,
            "path": op.path,
            **({"to": op.dst} if op.dst else {}),
            "bytes": size,
            "age": round(max(0.0, now - created), 1),
            "tries": max((r.tries for r in rows), default=0),
            "state": "held" if any(r.state == "held" for r in rows) else "pending",
            **({"error": errors[-1]} if errors else {}),
        }
        entries.append((created, entry))
    entries.sort(key=lambda e: e[0])  # stable: journal order among equals
    oldest = entries[0][0] if entries else None
    listed = entries if limit is None else entries[: max(limit, 0)]
    return PendingSummary(
        changes=[e for _, e in listed],
        count=len(entries),
        bytes=total,
        oldest_age=None if oldest is None else round(max(0.0, now - oldest), 1),
        rows=len(records),
        by_op=dict(Counter(str(e["op"]) for _, e in entries)),
    )
