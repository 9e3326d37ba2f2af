"""A `multipart/form-data` upload read from the file its body was spooled to: the text
fields in memory, the file's bytes copied from the spool (never held in memory whole).

Only what form uploads use: parts separated by the Content-Type's boundary, each with a
`Content-Disposition: form-data; name=...[; filename=...]` and an optional Content-Type.
A malformed body is a ValueError with a one-line message.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

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


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/form-data` Content-Type, or ValueError."""
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise ValueError(f"expected multipart/form-data, not {header.get_content_type()!r}")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("multipart/form-data without a boundary")
    return boundary.encode("latin-1")


def parse_form(body: Path, content_type: str) -> Form:
    """The parts of the body spooled at `body`: text fields (a part without a filename)
    and files (the first part of each name with a filename)."""
    delimiter = b"--" + boundary_of(content_type)
    form = Form()
    if body.stat().st_size == 0:
        raise ValueError("empty multipart body")
    with body.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos = data.find(delimiter)
        if pos < 0:
            raise ValueError("multipart body without its boundary")
        pos += len(delimiter)
        while True:
            if data[pos : pos + 2] == b"--":
                return form  # the closing delimiter
            if data[pos : pos + 2] != b"\r\n":
                raise ValueError("malformed multipart delimiter line")
            pos += 2
            end = data.find(b"\r\n" + delimiter, pos)
            if end < 0:
                raise ValueError("multipart body ends inside a part")
            _part(data, pos, end, form)
            pos = end + 2 + len(delimiter)


def _part(data: mmap.mmap, start: int, end: int, form: Form) -> None:
    split = data.find(b"\r\n\r\n", start, end)
    if split < 0:
        raise ValueError("multipart part without a blank line after its headers")
    headers = Message()
    for line in data[start:split].decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip()] = value.strip()
    if headers.get("content-disposition") is None:
        raise ValueError("multipart part without Content-Disposition")
    name = headers.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise ValueError("multipart part without a name")
    filename = headers.get_filename()
    body_start = split + 4
    if filename is None:
        if end - body_start > MAX_FIELD:
            raise ValueError(f"form field {name!r} is longer than {MAX_FIELD} bytes")
        text = data[body_start:end].decode("utf-8", "replace")
        form.fields.setdefault(name, []).append(text)
    elif name not in form.files:
        form.files[name] = FilePart(filename, headers.get_content_type(), body_start, end)


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
