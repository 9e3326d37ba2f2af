"""`WHERE x IN (...)` over many values, a bounded number per query.

A commit of thousands of files reads their current entries and their blobs' sizes this
way: a few queries instead of one per file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

IN_AT_ONCE = 500  # values per query (SQLite allows 32,766 parameters)


def rows_in(db: sqlite3.Connection, sql: str, values: Sequence[Any], *before: Any) -> Iterator[Any]:
    """The rows of `sql` for every chunk of `values`: `{marks}` in it stands for one
    chunk's placeholders, which follow the parameters `before`."""
    for start in range(0, len(values), IN_AT_ONCE):
        chunk = values[start : start + IN_AT_ONCE]
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), (*before, *chunk))
