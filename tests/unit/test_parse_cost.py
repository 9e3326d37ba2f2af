"""The estimate of what parsing a JSON body takes (server/body.py check_parse_cost): at
or above what the parse really takes, for the shapes that cost the most per byte."""

from __future__ import annotations

import json
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
