"""Server security probe, findings 4 and 5: authentication that is exact, and modes that
hold permission bits only.

Finding 4: of two `Authorization` headers the last one won, so a request carrying a
wrong one first still got in; `X-Repomount-Mode: 4755` stored the setuid bit. Exactly
one `Authorization` header must be sent and match exactly; a stored mode is its
permission bits (0o777): setuid, setgid and sticky bits are dropped, as on a nosuid
mount. (A trailing space after the token is no part of the header's value in HTTP:
the parser strips it before the server sees it, so that request is the same request.)

Finding 5: a presigned-URL signature holding a non-ASCII character made the
comparison raise, so an unauthenticated request got a 500 and a traceback in the
log. It is a 403 like any other bad signature.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import httpx
import pytest

from support.rawhttp import RawRequest
from support.server import ServerProc


def test_two_authorization_headers_are_refused(live: ServerProc) -> None:
    right = ("Authorization", f"Bearer {live.token}")
    wrong = ("Authorization", "Bearer wrong")
    for headers in ([wrong, right], [right, wrong], [right, right]):
        r = httpx.get(f"{live.url}/v1/repos", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{live.url}/v1/repos", headers=[right]).status_code == 200


@pytest.mark.parametrize(
    "value", ["Bearer test-token x", "Bearer test-tokenx", "Bearer  test-token", "test-token"]
)
def test_the_token_must_match_exactly(live: ServerProc, value: str) -> None:
    r = httpx.get(f"{live.url}/v1/repos", headers={"Authorization": value})
    assert r.status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_schemes_case_is_free(live: ServerProc, scheme: str) -> None:
    """RFC 9110 11.1: an authentication scheme is case-insensitive (some clients send
    `bearer`); the token itself must still match exactly."""
    r = httpx.get(f"{live.url}/v1/repos", headers={"Authorization": f"{scheme} {live.token}"})
    assert r.status_code == 200
    r = httpx.get(
        f"{live.url}/v1/repos", headers={"Authorization": f"{scheme} {live.token.upper()}"}
    )
    assert r.status_code == 401


def test_stored_modes_are_permission_bits_only(live: ServerProc) -> None:
    live.create_repo("modes")
    with live.client() as c:
        r = c.put("/v1/repos/modes/files/suid", content=b"x", headers={"X-Repomount-Mode": "4755"})
        assert r.status_code == 201, r.text
        ops = [{"op": "write", "path": "sgid", "content_b64": "", "mode": 0o2775}]
        assert c.post("/v1/repos/modes/commits", json={"operations": ops}).status_code == 201
        assert c.head("/v1/repos/modes/files/suid").headers["X-Repomount-Mode"] == "755"
        entries = c.get("/v1/repos/modes/tree").json()["entries"]
        assert {e["path"]: e["mode"] for e in entries} == {"sgid": 0o775, "suid": 0o755}
        # Out of range or not octal: refused as before.
        for bad in ("10000", "-1", "9", "0x1ff"):
            r = c.put("/v1/repos/modes/files/x", content=b"x", headers={"X-Repomount-Mode": bad})
            assert r.status_code == 422, bad


def _presigned_path(live: ServerProc) -> str:
    with live.client() as c:
        fs_id = c.post("/terminaluse/filesystems", json={"project_id": "p"}).json()["id"]
        url = urlsplit(c.post(f"/terminaluse/filesystems/{fs_id}/download-url").json()["url"])
    return url.path


@pytest.mark.parametrize("signature", ["é" * 64, "\u0660" * 64, "ab\x00"])
def test_a_non_ascii_signature_is_403_without_a_traceback(live: ServerProc, signature: str) -> None:
    path = _presigned_path(live)
    query = f"X-Repomount-Expires=9999999999&X-Repomount-Signature={quote(signature)}"
    mark = live.mark()
    r = httpx.get(f"{live.url}{path}?{query}")
    assert r.status_code == 403, r.text
    assert [line.status for line in live.requests(mark)] == [403]
    assert "Traceback" not in live.log_path.read_text(errors="replace")


def test_a_raw_non_ascii_byte_in_the_query_is_refused(live: ServerProc) -> None:
    path = _presigned_path(live)
    target = f"{path}?X-Repomount-Expires=9999999999&X-Repomount-Signature=\xe9\xe9"
    status, _, _ = RawRequest(live, "GET", target, headers=[], length=0).response()
    assert 400 <= status < 500
    assert "Traceback" not in live.log_path.read_text(errors="replace")
