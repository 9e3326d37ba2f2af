"""One multipart splitter serves the Oxen face (bodies in memory) and the Sentry face
(bodies spooled to disk): the same parts and the same one-line errors from both."""

from __future__ import annotations

from pathlib import Path

import pytest

from repomount.server.faces.sentry_form import copy_part, parse_form
from repomount.server.multipart import parse_multipart

CT = "multipart/form-data; boundary=XyZ"
BODY = (
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="name"\r\n\r\n'
    b"~/app.js\r\n"
    b"--XyZ\r\n"
    b'Content-Disposition: form-data; name="file"; filename="app%20.js"\r\n'
    b"Content-Type: application/javascript\r\n\r\n"
    b"let a = 1;\r\n--XyZ-- trailing\r\n"
)


def test_both_faces_see_the_same_parts(tmp_path: Path) -> None:
    parts = parse_multipart(BODY, CT)
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
        ("name", None, "text/plain", b"~/app.js"),
        ("file", "app .js", "application/javascript", b"let a = 1;"),
    ]
    spooled = tmp_path / "body"
    spooled.write_bytes(BODY)
    form = parse_form(spooled, CT)
    assert form.first("name") == "~/app.js"
    got: list[bytes] = []
    copy_part(spooled, form.files["file"], got.append)
    assert b"".join(got) == b"let a = 1;"
    assert form.files["file"].filename == "app%20.js"  # (Sentry names are not %-quoted)


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/mixed; boundary=XyZ", b"", "expected multipart/form-data"),
        ("multipart/form-data", b"", "without a boundary"),
        (CT, b"no delimiter here", "without its boundary"),
        (CT, b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nx", "ends inside"),
        (CT, b"--XyZ\r\nX-Other: 1\r\n\r\nx\r\n--XyZ--", "without Content-Disposition"),
        (CT, b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--", "without a name"),
    ],
)
def test_a_malformed_body_is_one_clear_error_on_both_faces(
    tmp_path: Path, content_type: str, body: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_multipart(body, content_type)
    spooled = tmp_path / "body"
    spooled.write_bytes(body)
    with pytest.raises(ValueError, match=message):  # (the Content-Type first, even empty)
        parse_form(spooled, content_type)
