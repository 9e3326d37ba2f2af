"""What a mount that is not running left in its journal, read without changing it.

`repomount unmount` of a mount whose daemon died (kill -9, the OOM killer) finds the
mount's state directory (control.noted_state_dir) and says what waits there for the
next mount, counted as `repomount status` counts it (pending.py). Read-only: the journal
belongs to the next mount, which replays it.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from repomount.vfs.journal_schema import blob_dir, journal_path, load_records
from repomount.vfs.pending import PendingSummary, summarize


def pending_in(state_dir: Path, *, limit: int | None = None) -> PendingSummary | None:
    """The changes pending in `state_dir`'s journal (`limit` bounds those listed); None
    when there is no journal there or it cannot be read."""
    db_path = journal_path(state_dir)
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(str(db_path))}?mode=ro", uri=True)
        try:
            records = load_records(db)
        finally:
            db.close()
    except sqlite3.Error:
        return None
    blobs = blob_dir(state_dir)

    def blob_size(name: str) -> int:
        try:
            return (blobs / name).stat().st_size
        except OSError:
            return 0

    return summarize(records, blob_size, time.time(), limit=limit)
