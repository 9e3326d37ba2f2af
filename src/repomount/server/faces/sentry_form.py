"""A `multipart/form-data` upload read from the file its body was spooled to: the text
fields in memory, the file's bytes copied from the spool (never held in memory whole).

The parts are found by `server/multipart.py`'s `split_parts`, over an mmap of the spool.
A malformed body is a ValueError with a one-line message.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from repomount.server.multipart import boundary_of, split_parts

MAX_FIELD = 64 << 10  # bytes of one text field
CHUNK = 1 << 20


@dataclass(frozen=True)
class FilePart:
    filename: str | None
    content_type: str
    start: int  # where its bytes are in the spooled body
    end: int


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


def parse_form(body: Path, content_type: str) -> Form:
    """The parts of the body spooled at `body`: text fields (a part without a filename)
    and files (the first part of each name with a filename)."""
    form = Form()
    boundary_of(content_type)  # (a wrong Content-Type is told first, even with no body)
    if body.stat().st_size == 0:
        raise ValueError("empty multipart body")
    with body.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for part in split_parts(data, content_type):
            if part.filename is None:
                if part.end - part.start > MAX_FIELD:
                    raise ValueError(f"form field {part.name!r} is longer than {MAX_FIELD} bytes")
                text = data[part.start : part.end].decode("utf-8", "replace")
                form.fields.setdefault(part.name, []).append(text)
            elif part.name not in form.files:
                form.files[part.name] = FilePart(
                    part.filename, part.content_type, part.start, part.end
                )
    return form


def copy_part(body: Path, part: FilePart, write: Callable[[bytes], None]) -> None:
    """Hand the part's bytes to `write`, a chunk at a time."""
    with body.open("rb") as f:
        f.seek(part.start)
        left = part.end - part.start
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                raise ValueError("the spooled body is shorter than its parts")
            write(chunk)
            left -= len(chunk)
