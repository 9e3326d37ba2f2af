"""Edits over content never seen (vfs/sparse.py) against a plain model: random writes
and truncates on a file whose base bytes are unknown; laid over the base afterwards,
the result equals the same operations done on the whole file, and every byte the
edits claim to know is the model's."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from repomount.vfs.sparse import Sparse, materialize

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 40), st.binary(min_size=1, max_size=12)),
        st.tuples(st.just("truncate"), st.integers(0, 50), st.just(b"")),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(base=st.binary(max_size=30), ops=ops)
def test_edits_laid_over_the_base_equal_the_edits_done_on_the_whole(
    base: bytes, ops: list[tuple[str, int, bytes]]
) -> None:
    model = bytearray(base)
    sparse = Sparse("f", "v1", keep=len(base), length=len(base))
    with tempfile.TemporaryDirectory() as tmp:
        edits_path, base_path, out_path = (os.path.join(tmp, n) for n in ("e", "b", "o"))
        edits = os.open(edits_path, os.O_RDWR | os.O_CREAT)
        os.ftruncate(edits, len(base))  # holes: what the mount never saw
        for kind, at, data in ops:
            if kind == "write":
                if at > len(model):
                    model.extend(bytes(at - len(model)))
                model[at : at + len(data)] = data
                os.pwrite(edits, data, at)
                sparse.wrote(at, at + len(data))
            else:
                del model[at:]
                model.extend(bytes(at - len(model)))
                os.ftruncate(edits, at)
                sparse.truncated(at)
        assert sparse.length == len(model)
        for a, b in sparse.known:  # what it knows is right
            assert os.pread(edits, b - a, a) == bytes(model[a:b])
            assert sparse.covers(a, b)
        with open(base_path, "wb") as f:
            f.write(base)
        b_fd = os.open(base_path, os.O_RDONLY)
        out = os.open(out_path, os.O_RDWR | os.O_CREAT)
        try:
            materialize(sparse, b_fd, edits, out)
            assert os.pread(out, len(model) + 10, 0) == bytes(model)
        finally:
            for fd in (edits, b_fd, out):
                os.close(fd)


def test_round_trip_through_json() -> None:
    s = Sparse("d/f", "v9", keep=3, length=10, known=[(3, 10)])
    assert Sparse.from_json(s.to_json()) == s
