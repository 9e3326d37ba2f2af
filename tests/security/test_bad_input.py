"""Server security probe, findings 3 and 6: bad input is a 4xx, never a 500, and a name
that can be written can be read.

Finding 3: a path holding an encoded lone UTF-16 surrogate (`%ED%A0%80`, not valid
UTF-8) was accepted by `PUT /files` and gave 500s later; a lone surrogate in a JSON
path, message or author gave a 500 (and a traceback) too. A path that is not valid
UTF-8 is refused with 422 on every route; every parse error is a 4xx.

Finding 6: a file name holding `\\n` could be committed and listed, but GET and HEAD
answered 404 (the route pattern does not match a newline). Names with control
characters (0x00-0x1f, 0x7f) are refused at write with 422 on every face; and `%FF`
and `%FE`, which both decoded to U+FFFD and so named the same file, are refused (422)
like every invalid percent-escape or invalid UTF-8, instead of being replaced.
"""

from __future__ import annotations

import io
import json
import tarfile

import httpx
import pytest
import zstandard

from support.rawhttp import RawRequest
from support.server import ServerProc
from support.tusync import sync_up

SURROGATE = "%ED%A0%80"  # UTF-8 would-be encoding of U+D800: not valid UTF-8


@pytest.fixture(scope="module")
def c(live: ServerProc) -> httpx.Client:
    client = live.client()
    for name in ("bad", "rel"):
        client.post("/v1/repos", json={"name": name}).raise_for_status()
    return client


def head(c: httpx.Client, repo: str = "bad") -> str:
    head: str = c.get(f"/v1/repos/{repo}").json()["head"]
    return head


def no_traceback(live: ServerProc) -> None:
    log = live.log_path.read_text(errors="replace")
    assert "Traceback" not in log and " 500 " not in log


# --- URLs ---------------------------------------------------------------------------

# (method, URL with {bad} where the bad segment goes)
URL_ROUTES = [
    ("PUT", "/v1/repos/bad/files/f{bad}"),
    ("GET", "/v1/repos/bad/files/f{bad}"),
    ("HEAD", "/v1/repos/bad/files/f{bad}"),
    ("DELETE", "/v1/repos/bad/files/f{bad}"),
    ("GET", "/v1/repos/bad/tree?path=f{bad}"),
    ("PUT", "/relace/v1/repo/rel/file/f{bad}"),
    ("GET", "/relace/v1/repo/rel/file/f{bad}"),
    ("DELETE", "/relace/v1/repo/rel/file/f{bad}"),
    ("PUT", "/terminaluse/filesystems/bad/file-upload?path=f{bad}"),
    ("GET", "/terminaluse/filesystems/bad/file-download?path=f{bad}"),
    ("GET", "/terminaluse/filesystems/bad/files/f{bad}"),
]
BAD_ESCAPES = ["%FF", "%FE", SURROGATE, "%C3", "%zz", "%", "%F"]


@pytest.mark.parametrize("bad", BAD_ESCAPES)
@pytest.mark.parametrize(("method", "route"), URL_ROUTES)
def test_a_url_that_is_not_utf_8_is_422(
    live: ServerProc, c: httpx.Client, method: str, route: str, bad: str
) -> None:
    before = head(c), head(c, "rel")
    target = route.format(bad=bad)
    status, _, body = RawRequest(live, method, target, length=0).response()
    assert status == 422, (target, body)
    assert (head(c), head(c, "rel")) == before


def test_percent_ff_and_fe_never_name_a_file(c: httpx.Client) -> None:
    before = head(c)
    assert c.put("/v1/repos/bad/files/x%FF", content=b"1").status_code == 422
    assert c.get("/v1/repos/bad/files/x%FE").status_code == 422
    assert head(c) == before
    assert all("\ufffd" not in e["path"] for e in c.get("/v1/repos/bad/tree").json()["entries"])


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x01", "\x1f", "\x7f"])
def test_a_control_character_in_a_url_path_is_422(c: httpx.Client, char: str) -> None:
    """(Through `c`, which makes the repos: the Terminal Use face looks its filesystem up
    before the path, so run first on its own worker the test got a 404.)"""
    encoded = f"%{ord(char):02X}"
    r = c.put(f"/v1/repos/bad/files/a{encoded}b", content=b"x")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_path"
    r = c.put(f"/relace/v1/repo/rel/file/a{encoded}b", content=b"x")
    assert r.status_code == 422, r.text
    r = c.put("/terminaluse/filesystems/bad/file-upload", params={"path": f"a{char}b"})
    assert r.status_code == 422, r.text


def test_good_names_still_work_on_every_face(c: httpx.Client) -> None:
    name = "é/ü ñ%.txt"  # non-ASCII, a space and a percent sign: all fine
    url = "/v1/repos/bad/files/%C3%A9/%C3%BC%20%C3%B1%25.txt"
    assert c.put(url, content=b"native").status_code == 201
    assert c.get(url).content == b"native"
    assert c.get("/relace/v1/repo/bad/file/%C3%A9/%C3%BC%20%C3%B1%25.txt").content == b"native"
    r = c.get("/terminaluse/filesystems/bad/file-download", params={"path": name})
    assert r.content == b"native"


# --- JSON bodies --------------------------------------------------------------------


def post_raw_json(c: httpx.Client, url: str, text: str) -> httpx.Response:
    """`text` is sent as is: json.dumps writes a lone surrogate as an escape."""
    return c.post(url, content=text.encode(), headers={"Content-Type": "application/json"})


def ops_body(**fields: object) -> str:
    return json.dumps({"operations": [{"op": "mkdir", "path": "d"}], **fields})


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"operations": [{"op": "write", "path": "s\ud800", "content_b64": ""}]}),
        json.dumps({"operations": [{"op": "mkdir", "path": "\udcff"}]}),
        ops_body(message="\ud800"),
        ops_body(author="x\udfff"),
        ops_body(idempotency_key="\ud800"),
    ],
)
def test_a_lone_surrogate_in_a_commit_is_422(live: ServerProc, c: httpx.Client, body: str) -> None:
    before = head(c)
    r = post_raw_json(c, "/v1/repos/bad/commits", body)
    assert r.status_code == 422, r.text
    assert head(c) == before
    no_traceback(live)


@pytest.mark.parametrize(
    "op",
    [
        {"op": "write", "path": "a\nb", "content_b64": ""},
        {"op": "write", "path": "d/\x7f", "content_b64": ""},
        {"op": "mkdir", "path": "new\tdir"},
        {"op": "symlink", "path": "l\r", "target": "x"},
        {"op": "rename", "from": "src", "to": "dst\x00"},
        {"op": "rename", "from": "src", "to": "dst\x1b[31m"},
    ],
)
def test_a_control_character_in_a_written_name_is_422(c: httpx.Client, op: dict[str, str]) -> None:
    c.put("/v1/repos/bad/files/src", content=b"s").raise_for_status()
    before = head(c)
    r = c.post("/v1/repos/bad/commits", json={"operations": [op]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_path"
    message = r.json()["error"]["message"]
    assert "control character" in message or "NUL" in message
    assert head(c) == before


def test_relace_refuses_control_characters_and_surrogates_in_names(
    live: ServerProc, c: httpx.Client
) -> None:
    before = head(c, "rel")
    bodies = [
        {"source": {"type": "files", "files": [{"filename": "a\nb", "content": "x"}]}},
        {"source": {"type": "diff", "operations": [{"type": "write", "filename": "\x01"}]}},
        {
            "source": {
                "type": "diff",
                "operations": [{"type": "rename", "old_filename": "a", "new_filename": "b\n"}],
            }
        },
    ]
    bodies[1]["source"]["operations"][0]["content"] = "x"  # type: ignore[index]
    for body in bodies:
        r = c.post("/relace/v1/repo/rel/update", json=body)
        assert r.status_code == 422, r.text
    files = [{"filename": "s\ud800", "content": "x"}]
    r = post_raw_json(
        c, "/relace/v1/repo/rel/update", json.dumps({"source": {"type": "files", "files": files}})
    )
    assert r.status_code == 422, r.text
    r = c.post(
        "/relace/v1/repo",
        json={"source": {"type": "files", "files": [{"filename": "\n", "content": ""}]}},
    )
    assert r.status_code == 422, r.text
    assert head(c, "rel") == before
    no_traceback(live)


def test_terminal_use_refuses_bad_names_and_strings(live: ServerProc, c: httpx.Client) -> None:
    for field in ("project_id", "name"):
        body = {"project_id": "p", field: "x\ud800"}
        r = post_raw_json(c, "/terminaluse/filesystems", json.dumps(body))
        assert r.status_code == 422, r.text
    no_traceback(live)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("/v1/repos/bad/commits", "[" * 100_000),
        ("/v1/repos/bad/commits", '{"operations": NaN}'),
        ("/v1/repos/bad/read", '{"paths": [Infinity]}'),
        ("/relace/v1/repo/rel/update", '{"source": {"type": NaN}}'),
        ("/relace/v1/repo", "{" * 50_000),
        ("/terminaluse/filesystems", '{"project_id": -Infinity}'),
        ("/terminaluse/filesystems/bad/sync-complete", "[" * 50_000),
    ],
)
def test_unparsable_json_is_a_4xx(live: ServerProc, c: httpx.Client, url: str, text: str) -> None:
    r = post_raw_json(c, url, text)
    assert 400 <= r.status_code < 500, r.text
    no_traceback(live)


def test_terminal_use_refuses_an_archive_member_with_a_control_character(
    c: httpx.Client,
) -> None:
    fs_id, r = _sync_archive(c, {"dir/a\nb": b"x"})
    assert r.status_code == 422, r.text
    assert c.get(f"/v1/repos/{fs_id}").json()["head"] == "0"


def _sync_archive(c: httpx.Client, files: dict[str, bytes]) -> tuple[str, httpx.Response]:
    """A new Terminal Use filesystem synced up from a tar.zst of `files`: its id, and
    the sync-complete's answer."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    archive = zstandard.ZstdCompressor().compress(raw.getvalue())
    assert len(archive) < 1 << 20
    return sync_up(c, archive)


def test_terminal_use_refuses_an_archive_that_unpacks_far_past_its_size(
    c: httpx.Client,
) -> None:
    """This stop's security probe: a 98 KB tar.zst unpacked to 3 GiB on the server's
    disk (each member only bounded by --max-file-size, up to 100,000 of them). An
    archive may unpack to 256 MiB and 50 times its own size; past that it is 413, and
    nothing of it is committed."""
    # 3 x 120 MiB of zeros (a distinct byte each: no dedup)
    zeros = {f"zeros{i}.bin": bytes(120 << 20) + bytes([i + 1]) for i in range(3)}
    fs_id, r = _sync_archive(c, zeros)
    assert r.status_code == 413 and "unpacks to over" in r.text, r.text
    assert c.get(f"/v1/repos/{fs_id}").json()["head"] == "0"


HUGE_NUMBER = "9" * 5000  # int() refuses more than 4300 digits


@pytest.mark.parametrize(
    ("url", "params", "headers"),
    [
        ("/v1/repos/bad/tree", {"limit": HUGE_NUMBER}, {}),
        ("/v1/repos/bad/tree", {"at": HUGE_NUMBER}, {}),
        ("/v1/repos/bad/tree", {"at": str(1 << 70)}, {}),
        ("/v1/repos/bad/changes", {"since": HUGE_NUMBER}, {}),
        ("/v1/repos/bad/files/src", {"at": HUGE_NUMBER}, {}),
        ("/v1/repos/bad/files/src", {}, {"Range": f"bytes={HUGE_NUMBER}-"}),
        ("/v1/repos/bad/files/src", {}, {"Range": f"bytes=0-{HUGE_NUMBER}"}),
    ],
)
def test_huge_numbers_are_a_4xx(
    live: ServerProc, c: httpx.Client, url: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    c.put("/v1/repos/bad/files/src", content=b"s").raise_for_status()
    r = c.get(url, params=params, headers=headers)
    assert r.status_code < 500, r.text
    if not headers:
        assert r.status_code == 422, r.text
    no_traceback(live)
