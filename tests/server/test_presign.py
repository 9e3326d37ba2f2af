"""Presigned URLs: bound to one method, one path and a deadline; never the token itself."""

from __future__ import annotations

from urllib.parse import parse_qs

from repomount.server import presign


def test_a_signature_is_bound_to_method_path_expiry_and_token() -> None:
    query = presign.presigned_query("tok", "PUT", "/terminaluse/archives/fs1", 1000)
    raw = query.encode()
    assert presign.verify("tok", "PUT", "/terminaluse/archives/fs1", raw, now=999)
    assert presign.verify("tok", "put", "/terminaluse/archives/fs1", raw, now=1000)
    assert not presign.verify("tok", "PUT", "/terminaluse/archives/fs1", raw, now=1001)
    assert not presign.verify("tok", "GET", "/terminaluse/archives/fs1", raw, now=0)
    assert not presign.verify("tok", "PUT", "/terminaluse/archives/fs2", raw, now=0)
    assert not presign.verify("other", "PUT", "/terminaluse/archives/fs1", raw, now=0)
    longer = query.replace("=1000", "=2000").encode()
    assert not presign.verify("tok", "PUT", "/terminaluse/archives/fs1", longer, now=0)
    assert "tok" not in parse_qs(query)[presign.SIGNATURE][0]


def test_garbage_never_verifies() -> None:
    for raw in (b"", b"X-Repomount-Expires=x&X-Repomount-Signature=y", b"%zz", b"a=b"):
        assert not presign.verify("tok", "GET", "/p", raw, now=0)
