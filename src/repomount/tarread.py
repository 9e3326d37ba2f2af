"""Reading a tar stream member by member as its bytes arrive, never holding it whole.

Shared by the server (POST /blobs reads a pack of blobs) and the native adapter (the
answer of POST /read). No event loop of its own: it pulls chunks from any async iterator
of bytes (only `read_trailer` needs trio, for its time bound). What it understands is
what those two need: ustar headers (512-byte blocks: name with its prefix, size in octal
or base-256, typeflag, link name, checksum), pax extended headers ('x', whose `path`,
`linkpath` and `size` override the next member's fields, the rest kept in `Member.pax`;
global 'g' headers are skipped), GNU long names and link names ('L', 'K', as GNU tar
writes names over 100 bytes), content padded to whole blocks, and two zero blocks at the
end. Anything else (a bad checksum, a stream cut short, oversized extended headers) is a
TarError.

Extended headers are the only part read into memory, so a member's are refused past
MAX_PAX bytes in all, from their declared sizes, before a byte of them is read: a few
KiB of zstd declaring a 1 GB pax header must not cost a GB. `FileTarReader` is the
same reader over a blocking file, for worker threads (the Terminal Use face's archives).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

from repomount.paths import shown

log = logging.getLogger(__name__)

BLOCK = 512
ZERO_BLOCK = b"\0" * BLOCK
MAX_PAX = 1 << 20  # a member's extended headers are read into memory: at most this
TRAILER_MAX = 64 << 10  # bytes read (and ignored) after the end of an archive, at most
TRAILER_WAIT = 1.0  # seconds waited for them, at most
# Typeflags of a regular file ('\0' is the pre-POSIX spelling; '7', contiguous, is
# read as a regular file by every tar that has no such thing).
REGULAR = (b"0", b"\0", b"7")
SYMLINK = b"2"
DIRECTORY = b"5"
PAX = b"x"
GLOBAL_PAX = b"g"
GNU_LONG_NAME = b"L"
GNU_LONG_LINK = b"K"
EXTENDED = (PAX, GLOBAL_PAX, GNU_LONG_NAME, GNU_LONG_LINK)  # headers of the next member

T = TypeVar("T")


class TarError(ValueError):
    """The stream is not a tar this reader understands (or was cut short)."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    type: bytes  # the typeflag byte: b"0" regular, b"2" symlink, b"5" directory, ...
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)  # the pax records not applied

    @property
    def is_file(self) -> bool:
        return self.type in REGULAR

    @property
    def is_symlink(self) -> bool:
        return self.type == SYMLINK


class TarReader:
    """`await next()` gives each member's header (None after the end-of-archive
    blocks); `read()` / `chunks()` then give its content. Content not read is skipped
    (still consumed from the stream) by the next `next()`."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        before_waiting: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._chunks: AsyncIterator[bytes] = stream.__aiter__()
        self._before_waiting = before_waiting  # run before each wait for the stream
        self._buf = b""
        self._pos = 0
        self._left = 0  # content bytes of the current member not read yet
        self._pad = 0  # then this many padding bytes
        self._ended = False

    async def next(self) -> Member | None:
        """The next member's header, or None at the end of the archive."""
        if self._ended:
            return None
        await self._skip(self._left + self._pad)
        self._left = self._pad = 0
        pax: dict[str, str] = {}
        extended = 0  # bytes of this member's extended headers so far
        while True:
            block = await self._take(BLOCK, "a header")
            if block == ZERO_BLOCK:
                if await self._take(BLOCK, "the end of the archive") != ZERO_BLOCK:
                    raise TarError("a single zero block inside the archive")
                self._ended = True
                return None
            member = parse_header(block)
            padded = member.size + -member.size % BLOCK
            if member.type in EXTENDED:
                extended += member.size
                if extended > MAX_PAX:  # (checked before any of it is read)
                    raise TarError(
                        f"extended headers of over {MAX_PAX} bytes before one member"
                        f" (a {member.type.decode('latin-1')!r} header of {member.size})"
                    )
                if member.type == GLOBAL_PAX:
                    await self._skip(padded)  # defaults this reader does not apply
                    continue
                data = (await self._take(padded, "an extended header"))[: member.size]
                if member.type == PAX:
                    pax.update(parse_pax(data))
                else:  # a GNU long name: the name, NUL-terminated
                    key = "path" if member.type == GNU_LONG_NAME else "linkpath"
                    pax[key] = _text(data)
                continue
            member = _with_pax(member, pax)
            self._left, self._pad = member.size, padded - member.size
            return member

    async def finish(self, most: int) -> bool:
        """After the end of the archive: consume what the stream still holds (a writer
        may pad the archive, and an HTTP body's end must be read for its connection to
        carry the next exchange), ignoring it; at most `most` bytes. Whether the stream
        ended within them."""
        left = most - (len(self._buf) - self._pos)
        self._buf, self._pos = b"", 0
        if left < 0:
            return False
        async for chunk in self._chunks:
            left -= len(chunk)
            if left < 0:
                return False
        return True

    async def read(self, limit: int = 1 << 18) -> bytes:
        """Up to `limit` bytes of the current member's content; b"" once it is all read."""
        if self._left == 0:
            return b""
        if self._pos >= len(self._buf):
            await self._pull("the content of a member")
        end = min(len(self._buf), self._pos + self._left, self._pos + limit)
        data = self._buf[self._pos : end]
        self._pos = end
        self._left -= len(data)
        return data

    async def chunks(self, limit: int = 1 << 18) -> AsyncIterator[bytes]:
        """The rest of the current member's content, chunk by chunk."""
        while data := await self.read(limit):
            yield data

    # ------------------------------------------------------------------ the buffer

    async def _pull(self, what: str) -> None:
        """Replace the (used up) buffer with the stream's next non-empty chunk."""
        if self._before_waiting is not None:
            await self._before_waiting()
        async for chunk in self._chunks:
            if chunk:
                self._buf, self._pos = bytes(chunk), 0
                return
        raise TarError(f"the stream ends inside {what}")

    async def _take(self, n: int, what: str) -> bytes:
        """Exactly the next `n` bytes."""
        available = len(self._buf) - self._pos
        if available >= n:
            data = self._buf[self._pos : self._pos + n]
            self._pos += n
            return data
        parts = [self._buf[self._pos :]]
        self._pos = len(self._buf)
        while available < n:
            await self._pull(what)
            piece = self._buf[: n - available]
            self._pos = len(piece)
            parts.append(piece)
            available += len(piece)
        return b"".join(parts)

    async def _skip(self, n: int) -> None:
        while n > 0:
            if self._pos >= len(self._buf):
                await self._pull("the content of a member")
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step


async def read_trailer(reader: TarReader) -> None:
    """After the end of the archive, what the stream still holds (tar's padding to whole
    records; an HTTP body's last message), read and ignored so that its connection
    carries the next exchange (else a client drops it, or a server answers with
    `Connection: close`, and the next request pays a handshake and TCP's slow start).
    At most TRAILER_MAX bytes, for at most TRAILER_WAIT seconds: everything wanted has
    arrived by then, so a stream that stalls, fails or runs on there costs its
    connection, never the exchange (no error is raised)."""
    with trio.move_on_after(TRAILER_WAIT):
        try:
            await reader.finish(TRAILER_MAX)
        except Exception as exc:  # (a 408, a 413, a connection cut: the archive is whole)
            log.debug("after the end of a tar stream: %r", exc)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class FileTarReader:
    """A TarReader over a blocking file, for a worker thread: `next()` and `read()` as
    TarReader's, but plain calls. The same reader runs under them; its stream never
    waits (each chunk is a blocking read), so each of its coroutines finishes at once."""

    def __init__(self, file: Readable, chunk: int = 1 << 18) -> None:
        self._reader = TarReader(_FileChunks(file, chunk))

    def next(self) -> Member | None:
        return _finish(self._reader.next())

    def read(self, limit: int = 1 << 18) -> bytes:
        return _finish(self._reader.read(limit))


class _FileChunks:
    """A blocking file as an async iterator of chunks (one that never suspends)."""

    def __init__(self, file: Readable, chunk: int) -> None:
        self._file = file
        self._chunk = chunk

    def __aiter__(self) -> _FileChunks:
        return self

    async def __anext__(self) -> bytes:
        if data := self._file.read(self._chunk):
            return data
        raise StopAsyncIteration


def _finish(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a FileTarReader's stream suspended (it must be a blocking file)")


# --------------------------------------------------------------------------- headers


def parse_header(block: bytes) -> Member:
    """The fields of one 512-byte ustar header block (TarError when it is not one)."""
    if len(block) != BLOCK:
        raise TarError("a header must be 512 bytes")
    stored = _octal(block[148:156], "checksum")
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    # (the signed sum, of old writers, only when needed: a per-byte loop in Python)
    if stored != unsigned and stored != _signed_sum(block, unsigned):
        raise TarError("a header's checksum does not match (not a tar stream?)")
    name = _text(block[0:100])
    if block[257:263] in (b"ustar\0", b"ustar "):
        prefix = _text(block[345:500])
        if prefix and block[257:263] == b"ustar\0":
            name = f"{prefix}/{name}"
    return Member(
        name=name,
        size=_number(block[124:136], "size"),
        type=block[156:157],
        linkname=_text(block[157:257]),
    )


def parse_pax(data: bytes) -> dict[str, str]:
    """The records `LENGTH key=value\\n` of a pax extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        length_text = data[pos:space] if space >= 0 else b""
        if not length_text.isdigit():
            raise TarError("a malformed pax record")
        end = pos + int(length_text)
        record = data[space + 1 : end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise TarError("a malformed pax record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _with_pax(member: Member, pax: dict[str, str]) -> Member:
    if not pax:
        return member
    rest = dict(pax)
    name = rest.pop("path", member.name)
    linkname = rest.pop("linkpath", member.linkname)
    size = member.size
    if "size" in rest:
        text = rest.pop("size")
        if not text.isdigit():
            raise TarError(f"a pax size {shown(text)}")
        size = int(text)
    return Member(name=name, size=size, type=member.type, linkname=linkname, pax=rest)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _octal(field: bytes, what: str) -> int:
    text = field.replace(b"\0", b" ").strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"a header's {what} field is not octal: {field!r}") from None


def _number(field: bytes, what: str) -> int:
    """An octal field, or a base-256 one (first byte 0x80) as GNU tar writes big sizes."""
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    if field[0] == 0xFF:
        raise TarError(f"a negative {what}")
    return _octal(field, what)


def _signed_sum(block: bytes, unsigned: int) -> int:
    """A header's checksum with its bytes taken as signed chars."""
    return unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
