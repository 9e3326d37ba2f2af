"""`multipart/form-data` bodies, parsed from bytes (the server has no multipart library).

Only what form uploads use: parts separated by the boundary of the Content-Type, each
with a `Content-Disposition: form-data; name=...; filename=...` and an optional
Content-Type. A malformed body is a ValueError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote


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


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of `body`, in order."""
    delimiter = b"--" + boundary_of(content_type)
    start = body.find(delimiter)
    if start < 0:
        raise ValueError("multipart body without its boundary")
    parts: list[Part] = []
    pos = start + len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            return parts  # the closing delimiter
        if body[pos : pos + 2] != b"\r\n":
            raise ValueError("malformed multipart delimiter line")
        pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise ValueError("multipart body ends inside a part")
        parts.append(_part(body[pos:end]))
        pos = end + 2 + len(delimiter)


def _part(raw: bytes) -> Part:
    head, sep, data = raw.partition(b"\r\n\r\n")
    if not sep:
        if raw.startswith(b"\r\n"):  # no headers at all
            head, data = b"", raw[2:]
        else:
            raise ValueError("multipart part without a blank line after its headers")
    headers = Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip()] = value.strip()
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise ValueError("multipart part without Content-Disposition")
    name = headers.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise ValueError("multipart part without a name")
    filename = headers.get_filename()
    if filename is not None and "%" in filename:
        filename = unquote(filename)
    return Part(name, filename, headers.get_content_type(), data)
