"""The estimate of what parsing a JSON body takes (server/body.py check_parse_cost): at
or above what the parse really takes, for the shapes that cost the most per byte."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from repomount.server import body
from repomount.server.errors import ApiError

N = 100_000
SHAPES = {
    "empty objects": b"[" + b",".join([b"{}"] * N) + b"]",
    "small objects": b"[" + b",".join([b'{"a":1}'] * N) + b"]",
    "empty arrays": b"[" + b",".join([b"[]"] * N) + b"]",
    "short strings": b"[" + b",".join([b'"ab"'] * N) + b"]",
    "distinct strings": b"[" + b",".join([b'"%d"' % i for i in range(N)]) + b"]",
    "floats": b"[" + b",".join([b"1.5"] * N) + b"]",
    "large integers": b"[" + b",".join([b"%d" % (10**20 + i) for i in range(N)]) + b"]",
    "many keys": b"{" + b",".join([b'"k%d":0' % i for i in range(N)]) + b"}",
    "operations": json.dumps(
        [{"op": "write", "path": f"src/m{i}.py", "blob": "ab" * 32, "mode": 420} for i in range(N)]
    ).encode(),
}


def _parsed_bytes(raw: bytes) -> int:
    tracemalloc.start()
    try:
        parsed = json.loads(raw)
        taken = tracemalloc.get_traced_memory()[0]
        del parsed
    finally:
        tracemalloc.stop()
    return taken


@pytest.mark.parametrize("shape", SHAPES)
def test_the_estimate_is_at_least_what_parsing_takes(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = SHAPES[shape]
    taken = _parsed_bytes(raw)
    monkeypatch.setattr(body, "PARSE_COST_MAX", taken - 1)
    monkeypatch.setattr(body, "LARGE_BODY", 0)
    with pytest.raises(ApiError) as refused:
        body.check_parse_cost(raw)  # (its estimate is over `taken - 1`)
    assert refused.value.code == "too_large"


def test_a_small_body_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body, "PARSE_COST_MAX", 0)
    body.check_parse_cost(b"[" + b",".join([b"{}"] * 1000) + b"]")  # (under LARGE_BODY)


def _relace_repo_of(text: str, files: int) -> bytes:
    """Relace's documented repo create: the files' text inline, as its SDK sends it."""
    items = [{"filename": f"data/{i}.csv", "content": text} for i in range(files)]
    return json.dumps({"source": {"type": "files", "files": items}}).encode()


def test_text_sent_inline_is_not_counted_as_values() -> None:
    """8 MiB of CSV in a Relace repo create parses into a few strings (~9 MB), but its
    commas counted as values: 'about 296 MiB', 413."""
    rows = "\n".join(",".join(str((i * j) % 10) for j in range(10)) for i in range(100_000))
    raw = _relace_repo_of(rows[: 1 << 20], 8)
    assert len(raw) > 8 << 20
    body.check_parse_cost(raw)
    assert _parsed_bytes(raw) < 3 * len(raw)


def test_values_hidden_among_long_strings_still_count() -> None:
    raw = _relace_repo_of("x" * (1 << 20), 4)[:-2] + b"," + b",".join([b"{}"] * 2_000_000) + b"]}"
    with pytest.raises(ApiError):
        body.check_parse_cost(raw)


@pytest.mark.parametrize(
    "raw",
    [b'["' + b'\\"' * (4 << 20), b'"\\' * (4 << 20), b'["' + b"{}," * (3 << 20)],
    ids=["escapes, unclosed", "backslash at the end", "brackets, unclosed"],
)
def test_unclosed_strings_are_scanned_in_one_pass(raw: bytes) -> None:
    start = time.monotonic()
    body.check_parse_cost(raw)  # (a string to the end: nothing outside it)
    assert time.monotonic() - start < 2
