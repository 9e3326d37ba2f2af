"""Relace `clone` as a stream: `{"files": [{"filename": …, "content": …}, …]}` written
file by file and chunk by chunk, so that a clone never holds a whole file (three
clones of one 200 MiB file took a gigabyte when each was read whole, decoded and
encoded again).

Only UTF-8 text files are listed, as the service leaves binary files out; a file is
checked whole before any of it is sent, so its entry is either complete or absent.
Small files go in groups, each checked and written in one worker-thread call (a thread
hop per file made clones of many small files slow); a large one is checked in one
call and then sent a chunk at a time.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Generator, Sequence

from repomount.server.backend import Backend
from repomount.server.store import Entry, Store

CHUNK = 256 << 10
GROUP_BYTES = 1 << 20  # small files written together


def text_files(entries: dict[str, Entry]) -> list[Entry]:
    """The regular files of a snapshot in path order (no directories, no symlinks)."""
    return [e for _, e in sorted(entries.items()) if e.type == "file" and e.version is not None]


async def clone_body(backend: Backend, files: Sequence[Entry]) -> AsyncIterator[bytes]:
    store = backend.store
    yield b'{"files":['
    first = True
    group: list[Entry] = []
    grouped = 0

    async def flush() -> AsyncIterator[bytes]:
        nonlocal first, group, grouped
        items = await backend.run(_small_items, store, group)
        group, grouped = [], 0
        if items:
            yield (b"" if first else b",") + b",".join(items)
            first = False

    for entry in files:
        if entry.size <= CHUNK:
            group.append(entry)
            grouped += entry.size
            if grouped >= GROUP_BYTES:
                async for out in flush():
                    yield out
            continue
        if group:
            async for out in flush():
                yield out
        if not await backend.run(_is_utf8, store, entry):
            continue
        yield (b"" if first else b",") + _item_head(entry.path)
        first = False
        pieces = _escaped_pieces(store, entry)
        done = object()
        try:
            while (piece := await backend.run(next, pieces, done)) is not done:
                assert isinstance(piece, bytes)
                yield piece
        finally:
            pieces.close()
        yield b'"}'
    if group:
        async for out in flush():
            yield out
    yield b"]}"


def _item_head(path: str) -> bytes:
    return b'{"filename":' + _json(path) + b',"content":"'


def _json(value: str) -> bytes:
    # As Starlette writes JSON (UTF-8, not ASCII escapes); a name with a lone surrogate
    # has no UTF-8 form, so it goes as an escape.
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


def _small_items(store: Store, group: Sequence[Entry]) -> list[bytes]:
    """The JSON items of the UTF-8 files among small ones (worker thread)."""
    items = []
    for entry in group:
        assert entry.version is not None
        with store.open_blob(entry.version) as blob:
            data = blob.read(entry.size + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        items.append(_item_head(entry.path) + _json(text)[1:-1] + b'"}')
    return items


def _is_utf8(store: Store, entry: Entry) -> bool:
    """Whether the whole file is UTF-8 text, read a chunk at a time (worker thread)."""
    assert entry.version is not None
    decoder = codecs.getincrementaldecoder("utf-8")()
    with store.open_blob(entry.version) as blob:
        try:
            while chunk := blob.read(CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _escaped_pieces(store: Store, entry: Entry) -> Generator[bytes, None, None]:
    """The file's text as the inside of a JSON string, a chunk at a time (each step in
    a worker thread); a character split between chunks is held for the next."""
    assert entry.version is not None
    decoder = codecs.getincrementaldecoder("utf-8")()
    with store.open_blob(entry.version) as blob:
        while chunk := blob.read(CHUNK):
            if text := decoder.decode(chunk):
                yield _json(text)[1:-1]
        if text := decoder.decode(b"", final=True):
            yield _json(text)[1:-1]
