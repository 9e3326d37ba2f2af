"""`multipart/form-data` bodies (the server has no multipart library).

Only what form uploads use: parts separated by the boundary of the Content-Type, each
with a `Content-Disposition: form-data; name=...; filename=...` and an optional
Content-Type. A malformed body is a ValueError with a one-line message.

`split_parts` locates the parts in any buffer (bytes, or an mmap of a body spooled to
disk, so a large upload is never held in memory); `parse_multipart` is the in-memory
form, for small bodies.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote

Buffer = bytes | mmap.mmap


@dataclass(frozen=True)
class Span:
    """One part, located in the body: its bytes are body[start:end]."""

    name: str
    filename: str | None
    content_type: str
    start: int
    end: int


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


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


def split_parts(data: Buffer, content_type: str) -> Iterator[Span]:
    """The parts of the body in `data`, in order. A wrong Content-Type is a ValueError
    at once, not at the first part."""
    return _split(data, b"--" + boundary_of(content_type))


def _split(data: Buffer, delimiter: bytes) -> Iterator[Span]:
    pos = data.find(delimiter)
    if pos < 0:
        raise ValueError("multipart body without its boundary")
    pos += len(delimiter)
    while True:
        if data[pos : pos + 2] == b"--":
            return  # the closing delimiter
        if data[pos : pos + 2] != b"\r\n":
            raise ValueError("malformed multipart delimiter line")
        pos += 2
        end = data.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise ValueError("multipart body ends inside a part")
        yield _span(data, pos, end)
        pos = end + 2 + len(delimiter)


def _span(data: Buffer, start: int, end: int) -> Span:
    split = data.find(b"\r\n\r\n", start, end)
    if split >= 0:
        head, body_start = data[start:split], split + 4
    elif data[start : start + 2] == b"\r\n":  # no headers at all
        head, body_start = b"", start + 2
    else:
        raise ValueError("multipart part without a blank line after its headers")
    headers = Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip()] = value.strip()
    if headers.get("content-disposition") is None:
        raise ValueError("multipart part without Content-Disposition")
    name = headers.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise ValueError("multipart part without a name")
    return Span(name, headers.get_filename(), headers.get_content_type(), body_start, end)


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of `body`, in order, with their bytes (a %-quoted filename unquoted)."""
    parts = []
    for span in split_parts(body, content_type):
        filename = span.filename
        if filename is not None and "%" in filename:
            filename = unquote(filename)
        parts.append(Part(span.name, filename, span.content_type, body[span.start : span.end]))
    return parts
