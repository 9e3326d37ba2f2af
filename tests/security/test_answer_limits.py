"""Issue 18 #7 (the client's part): JSON from a remote is bounded in depth.

`limits.too_deep` decides without parsing (a parse of a deep answer is what raised
the RecursionError); it must agree with the real nesting of any JSON, whatever its
strings hold: brackets, quotes, backslashes, non-ASCII.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repomount.remotes.limits import MAX_JSON_DEPTH, Timeouts, decode_json, too_deep


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


_tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ a\u00e9\u2603\n'), max_size=12)
_leaves = st.none() | st.booleans() | st.integers() | _tricky_text


def nested(levels: int) -> st.SearchStrategy[Any]:
    """Values nested exactly `levels` deep (siblings shallower), strings tricky."""
    if levels == 0:
        return _leaves
    inner = nested(levels - 1)
    return st.one_of(
        st.tuples(st.lists(_leaves, max_size=2), inner).map(lambda t: [*t[0], t[1]]),
        st.tuples(_tricky_text, inner, st.dictionaries(_tricky_text, _leaves, max_size=2)).map(
            lambda t: {**t[2], t[0]: t[1]}
        ),
    )


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_JSON_DEPTH + 3).flatmap(nested))
def test_too_deep_agrees_with_the_real_depth(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert too_deep(raw) == (depth(value) > MAX_JSON_DEPTH)
    if depth(value) <= MAX_JSON_DEPTH:
        assert decode_json(raw) == value


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 65 + b"1" + b"}" * 65,
        b'["' + b"\\\\" * 10 + b'"' + b",[" * 70 + b"]" * 70 + b"]",
    ],
)
def test_deep_answers_are_a_one_line_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        decode_json(raw)


@pytest.mark.parametrize(
    "raw", [b"[", b"<html>502</html>", b'{"a": "\xff"}', b'"unterminated', b"[" * 70]
)
def test_what_is_not_json_is_said_so(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_json(raw)


def test_timeouts_must_be_positive_and_a_long_poll_waits_longer() -> None:
    with pytest.raises(ValueError):
        Timeouts(read=0)
    t = Timeouts(connect=1, answer=2, read=3, min_rate=100)
    assert t.holding(25).answer == 27 and t.holding(-1) == t
    assert t.send_deadline(10.0, 500) == 10.0 + 1 + 2 + 5
    assert t.for_httpx().read == 3  # the larger of answer and read
