"""The server's Terminal Use face, driven by the official `terminaluse` SDK (0.35.0).

What is asserted is what the real service does, as docs/remotes.md ("Terminal Use")
describes it, with the face's documented choice where the service leaves one open. The
SDK is installed by scripts/setup (REST client only, see there). Archives (download URL,
push, sync-complete): test_terminaluse_sdk_archives.py.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest
from terminaluse.client import TerminalUseBase
from terminaluse.core.api_error import ApiError
from terminaluse.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PreconditionError,
    PreconditionFailedError,
    UnprocessableEntityError,
)

from support.server import ServerProc
from support.tusdk import NO_RETRY, base_of, head
from support.util import sha


def digest(data: bytes) -> str:
    return "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- filesystems --------------------------------------------------------------------------


def test_filesystems_create_list_retrieve(tu: TerminalUseBase, live: ServerProc) -> None:
    project = f"proj_{uuid.uuid4().hex[:8]}"
    created = tu.filesystems.create(project_id=project, name="my repo")
    assert created.id.startswith("fs_") and created.status == "READY"
    assert (created.name, created.project_id) == ("my repo", project)
    assert created.archive_checksum is not None  # a token even before the first write
    other = tu.filesystems.create(project_id=project + "x")
    assert other.name is None

    assert [f.id for f in tu.filesystems.list(project_id=project)] == [created.id]
    everything = {f.id for f in tu.filesystems.list()}
    assert {created.id, other.id} <= everything
    got = tu.filesystems.retrieve(created.id)
    assert (got.id, got.name, got.project_id) == (created.id, "my repo", project)
    # The filesystem is a store repo: the native API sees it.
    with live.client() as c:
        assert c.get(f"/v1/repos/{created.id}").status_code == 200

    with pytest.raises(ApiError) as missing:
        tu.filesystems.retrieve("fs_nope")
    assert missing.value.status_code == 404
    with pytest.raises(UnprocessableEntityError):
        tu.filesystems.create(project_id=None)  # type: ignore[arg-type]


def test_native_repo_is_a_filesystem_by_its_name(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    live.put(fs, "docs/readme.md", b"# hi\n")
    got = tu.filesystems.retrieve(fs)
    assert got.id == fs and got.project_id is None
    listing = tu.filesystems.list_files(fs, include_content=False)
    assert [f.path for f in listing.files] == ["docs/readme.md"]
    assert b"".join(tu.filesystems.download_file(fs, path="docs/readme.md")) == b"# hi\n"


def test_a_wrong_token_is_refused(live: ServerProc, fs: str) -> None:
    bad = TerminalUseBase(base_url=f"{live.url}/terminaluse", token="tu_wrong", agent_api_key="")
    with pytest.raises(ApiError) as refused:
        bad.filesystems.retrieve(fs, request_options=NO_RETRY)
    assert refused.value.status_code == 401


# --- single-file upload -------------------------------------------------------------------


def test_overwrite_mode_creates_then_replaces(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    first = tu.filesystems.with_raw_response.upload_file(
        fs, path="src/main.py", request=b"print(1)\n", request_options=NO_RETRY
    )
    assert first.status_code == 201
    assert first.data.created and first.data.write_mode == "overwrite"
    assert first.data.file_version == sha(b"print(1)\n")
    assert (first.data.path, first.data.size_bytes, first.data.filesystem_id) == (
        "src/main.py",
        9,
        fs,
    )
    # A leading "/" is normalised away; no precondition at all in overwrite mode.
    second = tu.filesystems.with_raw_response.upload_file(
        fs, path="/src/main.py", request=b"print(2)\n", request_options=NO_RETRY
    )
    assert second.status_code == 200 and not second.data.created
    assert second.data.path == "src/main.py"
    assert second.data.archive_version != first.data.archive_version
    # What the SDK wrote is in the store: the native API reads it.
    assert live.get(fs, "src/main.py") == b"print(2)\n"
    assert base_of(tu, fs).removeprefix("sha256:") == second.data.archive_version


def test_conditional_create_only(tu: TerminalUseBase, live: ServerProc, fs: str) -> None:
    base = base_of(tu, fs)  # the empty filesystem's token, with its "sha256:" prefix
    made = tu.filesystems.with_raw_response.upload_file(
        fs,
        path="notes/todo.txt",
        request=b"todo\n",
        write_mode="conditional",
        base_version=base,
        create_only="*",
        digest=digest(b"todo\n"),
        request_options=NO_RETRY,
    )
    assert made.status_code == 201 and made.data.created
    assert made.data.write_mode == "conditional"
    with pytest.raises(PreconditionFailedError) as exists:
        tu.filesystems.upload_file(
            fs,
            path="notes/todo.txt",
            request=b"other\n",
            write_mode="conditional",
            base_version=made.data.archive_version,
            create_only="*",
            request_options=NO_RETRY,
        )
    assert exists.value.body["code"] == 412
    assert live.get(fs, "notes/todo.txt") == b"todo\n"


def test_conditional_replace_takes_upload_or_manifest_versions(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    first = tu.filesystems.upload_file(fs, path="a.txt", request=b"one", request_options=NO_RETRY)
    second = tu.filesystems.upload_file(
        fs,
        path="a.txt",
        request=b"two",
        write_mode="conditional",
        base_version=first.archive_version,
        expected_version=first.file_version,
        request_options=NO_RETRY,
    )
    assert not second.created and second.file_version == sha(b"two")
    # The manifest's "sha256:<hex>" checksum and archive_checksum work as tokens too.
    meta = tu.filesystems.get_file(fs, "a.txt", include_content=False)
    assert meta.checksum == f"sha256:{sha(b'two')}"
    third = tu.filesystems.upload_file(
        fs,
        path="a.txt",
        request=b"three",
        write_mode="conditional",
        base_version=base_of(tu, fs),
        expected_version=meta.checksum,
        request_options=NO_RETRY,
    )
    assert third.file_version == sha(b"three")
    assert live.get(fs, "a.txt") == b"three"


def test_stale_base_version_is_409_and_writes_nothing(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    first = tu.filesystems.upload_file(fs, path="a.txt", request=b"a", request_options=NO_RETRY)
    # Any commit to any file, here through the native API, makes the base stale.
    live.put(fs, "elsewhere.txt", b"x")
    before = head(live, fs)
    for stale in (first.archive_version, "0" * 64, "not-a-version"):
        with pytest.raises(ConflictError) as conflict:
            tu.filesystems.upload_file(
                fs,
                path="a.txt",
                request=b"b",
                write_mode="conditional",
                base_version=stale,
                expected_version=first.file_version,
                request_options=NO_RETRY,
            )
        assert conflict.value.body == {
            "code": 409,
            "message": "baseVersion does not match current archive version.",
            "detail": "baseVersion does not match current archive version.",
        }
    assert head(live, fs) == before and live.get(fs, "a.txt") == b"a"


def test_a_base_version_of_another_filesystem_is_stale(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    live.create_repo(fs + "b")
    # Both filesystems are at head 0: the token still tells them apart.
    with pytest.raises(ConflictError):
        tu.filesystems.upload_file(
            fs,
            path="a.txt",
            request=b"b",
            write_mode="conditional",
            base_version=base_of(tu, fs + "b"),
            create_only="*",
            request_options=NO_RETRY,
        )


def test_wrong_expected_version_is_412(tu: TerminalUseBase, live: ServerProc, fs: str) -> None:
    first = tu.filesystems.upload_file(fs, path="a.txt", request=b"a", request_options=NO_RETRY)
    for path in ("a.txt", "missing.txt"):  # a missing file has no version to match
        with pytest.raises(PreconditionFailedError) as failed:
            tu.filesystems.upload_file(
                fs,
                path=path,
                request=b"b",
                write_mode="conditional",
                base_version=first.archive_version,
                expected_version=sha(b"something else"),
                request_options=NO_RETRY,
            )
        assert failed.value.body["message"] == (
            "expectedVersion does not match current file version."
        )
    # 409 is checked before 412: a stale base with a wrong version is a 409.
    live.put(fs, "b.txt", b"b")
    with pytest.raises(ConflictError):
        tu.filesystems.upload_file(
            fs,
            path="a.txt",
            request=b"b",
            write_mode="conditional",
            base_version=first.archive_version,
            expected_version=sha(b"wrong"),
            request_options=NO_RETRY,
        )
    assert live.get(fs, "a.txt") == b"a"


def test_conditional_without_base_version_is_428(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    with pytest.raises(PreconditionError) as required:
        tu.filesystems.upload_file(
            fs,
            path="a.txt",
            request=b"a",
            write_mode="conditional",
            create_only="*",
            request_options=NO_RETRY,
        )
    assert required.value.status_code == 428
    assert required.value.body["message"] == "baseVersion is required in conditional mode."
    assert head(live, fs) == 0


def test_bad_digest_and_malformed_requests_are_400(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    good = tu.filesystems.upload_file(
        fs, path="ok.bin", request=b"\x00\xff", digest=digest(b"\x00\xff"), request_options=NO_RETRY
    )
    assert good.file_version == sha(b"\x00\xff")
    bad: list[dict[str, Any]] = [
        {"digest": digest(b"another body")},
        {"digest": "sha-256=not base64!"},
        {"digest": "md5=" + base64.b64encode(hashlib.md5(b"x").digest()).decode()},
        {"digest": "sha-256=" + base64.b64encode(b"short").decode()},
        {"write_mode": "append"},
        {"path": "../escape.txt"},
        {"path": "dir/"},
        {"write_mode": "conditional", "base_version": good.archive_version, "create_only": "yes"},
        {
            "write_mode": "conditional",
            "base_version": good.archive_version,
            "create_only": "*",
            "expected_version": good.file_version,
        },
    ]
    for params in bad:
        kwargs: dict[str, Any] = {"path": "x.txt", **params}
        with pytest.raises(BadRequestError) as refused:
            tu.filesystems.upload_file(fs, request=b"body", request_options=NO_RETRY, **kwargs)
        assert refused.value.body["code"] == 400, params
    # A file where a directory is (or below a file) cannot be written either.
    for path in ("ok.bin/child", ""):
        with pytest.raises((BadRequestError, UnprocessableEntityError)):
            tu.filesystems.upload_file(fs, path=path, request=b"x", request_options=NO_RETRY)
    with pytest.raises(NotFoundError):
        tu.filesystems.upload_file("fs_missing", path="a", request=b"x", request_options=NO_RETRY)
    assert sorted(live.tree(fs)) == ["ok.bin"]


def test_idempotency_key_replays_once_and_refuses_another_body(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    base = base_of(tu, fs)
    kwargs: dict[str, Any] = {
        "path": "k.txt",
        "write_mode": "conditional",
        "base_version": base,
        "create_only": "*",
        "idempotency_key": "flush-1",
        "request_options": NO_RETRY,
    }
    first = tu.filesystems.with_raw_response.upload_file(fs, request=b"v1", **kwargs)
    assert first.status_code == 201 and head(live, fs) == 1
    # The same request again (its answer was "lost"): the same answer, no second write,
    # although its baseVersion is stale by now (the replay is looked up first).
    again = tu.filesystems.with_raw_response.upload_file(fs, request=b"v1", **kwargs)
    assert again.status_code == 201
    assert again.data == first.data
    assert head(live, fs) == 1
    # The same key with another body is a conflict, not a write.
    with pytest.raises(ConflictError) as reused:
        tu.filesystems.upload_file(fs, request=b"v2", **kwargs)
    assert "Idempotency-Key" in reused.value.body["message"]
    assert head(live, fs) == 1 and live.get(fs, "k.txt") == b"v1"


def test_sdk_retries_of_a_409_write_nothing(tu: TerminalUseBase, live: ServerProc, fs: str) -> None:
    """The SDK retries a 409 on its own (here once, after ~1 s): every try is refused."""
    tu.filesystems.upload_file(fs, path="a.txt", request=b"a", request_options=NO_RETRY)
    mark = live.mark()
    with pytest.raises(ConflictError):
        tu.filesystems.upload_file(
            fs,
            path="a.txt",
            request=b"b",
            write_mode="conditional",
            base_version="0" * 64,
            create_only="*",
            idempotency_key="retried",
            request_options={"max_retries": 1},
        )
    tries = [r for r in live.requests(mark) if r.path.endswith("/file-upload")]
    assert [r.status for r in tries] == [409, 409]
    assert live.get(fs, "a.txt") == b"a"


# --- reading --------------------------------------------------------------------------------


def test_list_files_pages_filters_and_content(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    files = {f"src/m{i}.py": f"x = {i}\n".encode() for i in range(5)}
    files |= {"README.md": b"# r\n", "bin/blob.dat": b"\x00\x01\xfe", "src/deep/er.txt": b"d"}
    for path, data in files.items():
        live.put(fs, path, data)
    seen, offset = [], 0
    while True:
        page = tu.filesystems.list_files(fs, include_content=False, limit=3, offset=offset)
        assert page.total_count == len(files) and page.filesystem_id == fs
        seen += page.files
        offset += 3
        if offset >= page.total_count:
            break
    assert [f.path for f in seen] == sorted(files)
    for f in seen:  # files only, checksums as versions
        assert not f.is_directory and f.content is None
        assert (f.size_bytes, f.checksum) == (len(files[f.path]), f"sha256:{sha(files[f.path])}")

    top = tu.filesystems.list_files(fs, recursive=False, include_content=False)
    assert [(f.path, f.is_directory) for f in top.files] == [
        ("README.md", False),
        ("bin", True),
        ("src", True),
    ]
    below = tu.filesystems.list_files(fs, directory="/src/", recursive=False)
    assert [f.path for f in below.files] == ["src/deep", *(f"src/m{i}.py" for i in range(5))]
    assert below.files[0].is_directory and below.files[0].content is None
    assert below.files[1].content == "x = 0\n" and not below.files[1].is_binary
    assert tu.filesystems.list_files(fs, directory="nowhere").total_count == 0

    binary = tu.filesystems.list_files(fs, directory="bin").files[0]
    assert binary.is_binary and binary.content is None
    python = tu.filesystems.list_files(fs, mime_type="text/x-python", include_content=False)
    assert python.total_count == 5
    with pytest.raises(UnprocessableEntityError):
        tu.filesystems.list_files(fs, limit=0)
    with pytest.raises(ApiError) as missing:
        tu.filesystems.list_files("fs_missing")
    assert missing.value.status_code == 404


def test_get_file_and_download(tu: TerminalUseBase, live: ServerProc, fs: str) -> None:
    big = bytes(range(256)) * 5000  # 1.28 MB: several chunks
    live.put(fs, "dir/a b.bin", big)
    text = "a" + "é" * 600_000  # 1.2 MB of UTF-8; the 1 MiB cut splits an "é"
    live.put(fs, "dir/text.txt", text.encode())
    meta = tu.filesystems.get_file(fs, "dir/a b.bin", include_content=False)
    assert (meta.path, meta.size_bytes, meta.checksum) == (
        "dir/a b.bin",
        len(big),
        f"sha256:{sha(big)}",
    )
    assert b"".join(tu.filesystems.download_file(fs, path="dir/a b.bin")) == big
    long = tu.filesystems.get_file(fs, "dir/text.txt")
    assert long.content_truncated and long.content is not None and not long.is_binary
    assert text.startswith(long.content) and len(long.content.encode()) == (1 << 20) - 1
    # Query parameters may hold anything: the SDK form-encodes them.
    live.put(fs, "odd/a+b #?&=.txt", b"odd")
    assert b"".join(tu.filesystems.download_file(fs, path="odd/a+b #?&=.txt")) == b"odd"
    folder = tu.filesystems.get_file(fs, "dir")
    assert folder.is_directory and folder.size_bytes is None and folder.checksum is None
    with pytest.raises(ApiError) as missing:
        b"".join(tu.filesystems.download_file(fs, path="dir/nope"))
    assert missing.value.status_code == 404
    with pytest.raises(ApiError) as gone:
        tu.filesystems.get_file(fs, "dir/nope")
    assert gone.value.status_code == 404
