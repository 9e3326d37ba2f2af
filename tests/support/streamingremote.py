"""An in-memory remote whose reads stream in 1 MiB pieces and can be held, slowed,
failed or corrupted: for tests of files read while they arrive (vfs/partial.py)."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

import trio

from repomount.remotes.base import Fetched, ProtocolError
from repomount.remotes.limits import Stalled
from support.memremote import MemRemote

MiB = 1 << 20


class Streaming(MemRemote):
    """Ranged reads in 1 MiB pieces. A read from offset 0 stops after `before_gate`
    bytes until `gate` is set; every read waits `latency` before its first byte; with
    `corrupt`, byte 3 MiB of what is streamed is wrong (a bad transfer); with
    `stop_after`, every read fails (stalled) after that many bytes; with `checks`, a
    whole read hashes what it streams and says so, as the native remote does;
    `piece_delay` makes a slow link."""

    def __init__(
        self, *, latency: float = 0.0, corrupt: bool = False, checks: bool = False
    ) -> None:
        super().__init__()
        self.checks = checks
        self.gate = trio.Event()
        self.before_gate = 2 * MiB
        self.latency = latency
        self.corrupt = corrupt
        self.offsets: list[int] = []
        self.delivered = 0  # bytes written to destinations
        self.fail_with: BaseException | None = None
        self.stop_after: int | None = None
        self.piece_delay = 0.0  # seconds per 1 MiB piece (a slow link)

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        self.offsets.append(offset)
        if self.latency:
            await trio.sleep(self.latency)
        if self.fail_with is not None:
            raise self.fail_with
        item = self.items[path]
        data = bytearray(item.data)
        if self.corrupt:
            data[3 * MiB] ^= 0xFF
        end = len(data) if length is None else min(len(data), offset + length)
        pos = offset
        while pos < end:
            if offset == 0 and pos >= self.before_gate:
                await self.gate.wait()
            if self.stop_after is not None and pos - offset >= self.stop_after:
                raise Stalled(f"{path}: the answer stopped after {self.stop_after} bytes")
            limit = end if self.stop_after is None else min(end, offset + self.stop_after)
            piece = bytes(data[pos : min(pos + MiB, limit)])
            dest.write(piece)
            self.delivered += len(piece)
            pos += len(piece)
            if self.piece_delay:
                await trio.sleep(self.piece_delay)
            await trio.lowlevel.checkpoint()
        whole = offset == 0 and end == len(data)
        if self.checks and whole and hashlib.sha256(data).hexdigest() != item.version:
            raise ProtocolError(f"content of {path!r} does not match its version")
        return Fetched(item.version, len(data), end - offset, self.checks and whole)
