"""Reading request bodies within limits: uploads to a spool file, JSON into memory.

Every body is read through `body_chunks`, in time: a client sending one byte every
20 s held its connection and a spool file without end (the HTTP server has no timeout
on a body). A body must bring its bytes within BODY_IDLE seconds plus one second per
BODY_MIN_RATE bytes, so that 1 GB at any rate above 1 KiB/s still arrives.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from starlette.requests import Request

from repomount.server.backend import Backend
from repomount.server.bodybudget import room_for
from repomount.server.errors import ApiError
from repomount.server.store import BlobSpool

BODY_IDLE = 60.0  # seconds
BODY_MIN_RATE = 1024  # bytes a second, on average, past BODY_IDLE
MAX_JSON_BODY = 64 << 20  # JSON bodies are read into memory; big content goes to blobs
SMALL_JSON_BODY = 64 << 10  # bodies that only carry a few settings (a name, an expiry)


# The body readers' refusals and their status, which every face answers in its own shape.
REFUSAL_STATUS = {"too_large": 413, "request_timeout": 408}


def too_large(limit: int) -> ApiError:
    return ApiError(
        "too_large", f"request body is larger than the limit of {limit} bytes", limit=limit
    )


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 408 once it falls behind its deadline."""
    began = trio.current_time()
    received = 0
    chunks = request.stream().__aiter__()
    while True:
        with trio.move_on_at(began + BODY_IDLE + received / BODY_MIN_RATE) as waited:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
        if waited.cancelled_caught:
            took = trio.current_time() - began
            why = f"the request body came too slowly: {received} bytes in {took:.0f} s"
            raise ApiError("request_timeout", why)
        received += len(chunk)
        yield chunk


def check_declared_length(request: Request, limit: int) -> int | None:
    """Refuse early, before reading a byte, when Content-Length already exceeds `limit`;
    the length declared, if any."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        size = int(declared)
    except ValueError:
        raise ApiError("invalid_request", f"bad Content-Length {declared!r}") from None
    if size > limit:
        raise too_large(limit)
    return size


async def spool_body(
    backend: Backend, request: Request, *, blob: bool = False, limit: int | None = None
) -> BlobSpool:
    """Stream the body to a spool file while hashing it, never holding it all in memory.

    Chunks are written from the event loop: the spool's 1 MiB buffer turns them into a
    few page-cache writes, far cheaper than a thread hop per chunk; the fsync, the slow
    part, happens later in a worker thread (Store.add_blob). A `blob` body (one only
    ever given to Store.add_blob, never read back through its path) is sized by its
    Content-Length: a small one is then spooled in memory (smallblobs.py; the HTTP
    server refuses a body longer than it declared). At most `limit` bytes (a face's
    own limit), and never past the server's file size limit.
    """
    most = backend.options.max_file_size
    limit = most if limit is None else min(limit, most)
    check_declared_length(request, limit)
    declared = request.headers.get("content-length") if blob else None
    spool = backend.store.new_spool(None if declared is None else int(declared))
    try:
        async for chunk in body_chunks(request):
            if spool.size + len(chunk) > limit:
                raise too_large(limit)
            spool.write(chunk)
    except BaseException:
        backend.store.discard_spool(spool)
        raise
    return spool


async def read_body(request: Request, limit: int, *, copies: int = 0) -> bytes:
    """The whole body, at most `limit` bytes: 413 at once when Content-Length is over
    it, else as soon as the streamed (chunked) body passes it; never read further.
    Read once the server has room in memory for it and the `copies` more its reader
    makes (bodybudget.py)."""
    declared = check_declared_length(request, limit)
    await room_for((limit if declared is None else declared) * (1 + copies))
    parts: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_json(
    backend: Backend, request: Request, limit: int = MAX_JSON_BODY
) -> dict[str, Any]:
    """The body as a JSON object: 400 bad_json when unparsable, 422 when not an object.
    Parsed in a worker thread: a large body takes a while, and the event loop serves
    everyone else meanwhile."""
    raw = await json_body(backend, request, limit)
    async with parsing_turn(backend, raw):
        return await backend.run(parse_json_object, raw)


async def json_body(backend: Backend, request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The raw bytes of a JSON body (at most `limit`, nor the server's file size limit),
    for a caller that parses it in a worker thread of its own (`parse_json_object`),
    in its `parsing_turn`."""
    return await read_body(request, min(backend.options.max_file_size, limit))


# Parsing a JSON body costs several times its size in memory (a 57 MiB body of small
# objects took 570 MB; one of empty objects, 28 times its size: bounded by
# check_parse_cost, below). Bodies over LARGE_BODY take turns to be parsed and
# used (backend.LARGE_BODIES_AT_ONCE at a time), so that many sent at once cannot take
# the server's memory; a small one (a saved file's commit) never waits. The turn starts
# once the body is in: a client sending slowly holds no turn.
LARGE_BODY = 1 << 20


@asynccontextmanager
async def parsing_turn(backend: Backend, raw: bytes) -> AsyncIterator[None]:
    """A turn to parse and use `raw` (wrap both): at once for a small body."""
    if len(raw) <= LARGE_BODY:
        yield
        return
    async with backend.large_bodies:
        yield


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`parse_json`, and the body must be an object (422 otherwise)."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ApiError("invalid_request", "request body must be a JSON object")
    return data


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN or Infinity, which no JSON encoder writes back): 400 bad_json;
    413 too_large for a body whose parse would take too much memory (check_parse_cost)."""
    check_parse_cost(raw)
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ApiError("bad_json", f"request body is not valid JSON: {error}") from None


# What parsing a body may take in memory, estimated from its bytes before it is parsed:
# every object or array about 256 bytes, every other value (a `,` or `:` before it) 80,
# and the bytes themselves (measured on CPython 3.11 for objects, arrays, keys, strings
# and numbers: the estimate was at or above what tracemalloc saw). Brackets and
# separators inside strings count too, so it errs high; in a body of few strings, so
# long ones (a file's text inline: a CSV's commas), only those outside them count,
# or a Relace repo made of 8 MiB of CSV was refused. A commit's operations take
# about six times their bytes by it (100,000 operations: ~110 MB); a body of short
# values takes up to 28 (a 64 MiB body of `{}`s took 1.8 GB), and is refused before
# it is parsed. Large bodies are parsed LARGE_BODIES_AT_ONCE at a time, so this bounds
# the memory they take together. (A body up to LARGE_BODY is not counted: at most ~28 MB.)
PARSE_COST_MAX = 256 << 20


def check_parse_cost(raw: bytes) -> None:
    """413 too_large when parsing `raw` would take more than PARSE_COST_MAX bytes. (In
    a worker thread: a body of long strings is scanned a second time.)"""
    if len(raw) <= LARGE_BODY:
        return
    containers, values = _structure(raw)
    cost = 256 * containers + 80 * values + len(raw)
    strings = raw.count(b'"') - raw.count(b'\\"')
    if cost > PARSE_COST_MAX and strings <= len(raw) >> 5:
        # Few strings, so long ones: text sent inline (Relace's `files`: a CSV, a
        # minified JSON file) whose separators are no values. Count outside them.
        containers, values = _structure(_STRING.sub(b"", raw))
        cost = 256 * containers + 80 * values + len(raw)
    if cost > PARSE_COST_MAX:
        raise ApiError(
            "too_large",
            f"request body would take about {cost >> 20} MiB of memory to parse"
            f" ({containers} objects or arrays, {values} values in {len(raw)} bytes);"
            f" the limit is {PARSE_COST_MAX >> 20} MiB",
            limit=PARSE_COST_MAX,
        )


# A JSON string, to its closing quote or to the body's end: once started it cannot fail
# (possessive, and a lone backslash at the end is taken), so a body of unclosed strings
# costs one pass, not one per quote.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)


def _structure(raw: bytes) -> tuple[int, int]:
    """The objects or arrays, and the values after a `,` or `:`, that `raw` may hold."""
    return raw.count(b"{") + raw.count(b"["), raw.count(b",") + raw.count(b":")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
