"""The server's Terminal Use face, driven by the official `terminaluse` SDK (0.35.0).

What is asserted is what the real service does, as docs/remotes.md ("Terminal Use")
describes it, with the face's documented choice where the service leaves one open. The
SDK is installed by scripts/setup (REST client only, see there).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import tarfile
import time
import uuid
from typing import Any

import httpx
import pytest
import zstandard
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
from terminaluse.types import PresignedUrlRequest

from support.server import ServerProc
from support.util import sha

# Otherwise the SDK retries 409 and 5xx twice, sleeping 1 s and 2 s.
NO_RETRY: Any = {"max_retries": 0}
_ids = itertools.count()


@pytest.fixture
def tu(live: ServerProc) -> TerminalUseBase:
    return TerminalUseBase(base_url=f"{live.url}/terminaluse", token=live.token, agent_api_key="")


@pytest.fixture
def fs(live: ServerProc) -> str:
    """A filesystem made through the native API: every store repo is one."""
    name = f"repo{next(_ids)}"
    live.create_repo(name)
    return name


def digest(data: bytes) -> str:
    return "sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def head(live: ServerProc, repo: str) -> int:
    with live.client() as c:
        return int(c.get(f"/v1/repos/{repo}").json()["head"])


def base_of(tu: TerminalUseBase, fs: str) -> str:
    checksum = tu.filesystems.retrieve(fs).archive_checksum
    assert checksum is not None
    return checksum


def make_archive(files: dict[str, bytes]) -> bytes:
    """A tar.zst as the SDK's sync_up builds it (regular files, zstd level 1)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=1).compress(buf.getvalue())


def read_archive(data: bytes) -> dict[str, bytes]:
    tar_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        out = {}
        for member in tar:
            f = tar.extractfile(member)
            assert f is not None and member.isfile()
            out[member.name] = f.read()
        return out


def manifest(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [
        {
            "path": p,
            "is_directory": False,
            "size_bytes": len(d),
            "checksum": f"sha256:{sha(d)}",
            "modified_at": "2026-01-01T00:00:00+00:00",
        }
        for p, d in files.items()
    ]


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


# --- archives -------------------------------------------------------------------------------


def push(tu: TerminalUseBase, fs: str, archive: bytes, **kwargs: Any) -> Any:
    """upload-url, PUT with no API auth (as the SDK does), sync-complete."""
    up = tu.filesystems.get_upload_url(fs, request=PresignedUrlRequest(expiration_seconds=600))
    assert (up.method, up.content_type) == ("PUT", "application/zstd")
    put = httpx.put(up.url, content=archive, headers={"Content-Type": "application/zstd"})
    assert put.status_code == 200
    return tu.filesystems.sync_complete(
        fs,
        direction="UP",
        status="SUCCESS",
        archive_checksum=f"sha256:{sha(archive)}",
        **{"archive_size_bytes": len(archive), **kwargs},
    )


def pull(tu: TerminalUseBase, fs: str) -> httpx.Response:
    down = tu.filesystems.get_download_url(fs)
    assert down.method == "GET"
    return httpx.get(down.url)  # no API auth: the URL is presigned


def test_archive_download_then_push_replaces_the_tree(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    assert pull(tu, fs).status_code == 404  # no archive before the first write
    before = {"keep.txt": b"k", "old/gone.txt": b"g", "dir/sub/x.txt": b"x"}
    for path, data in before.items():
        live.put(fs, path, data)
    got = pull(tu, fs)
    assert got.status_code == 200 and got.content[:4] == b"\x28\xb5\x2f\xfd"
    assert read_archive(got.content) == before
    old_base = base_of(tu, fs)

    # "dir" turns from a directory into a file: everything below it goes first.
    after = {"keep.txt": b"k", "new/file.txt": b"n", "dir": b"now a file"}
    sync_id = str(uuid.uuid4())
    done = push(tu, fs, make_archive(after), sync_id=sync_id, files=manifest(after))
    assert (done.status, done.files_count, done.sync_id) == ("COMPLETED", 3, sync_id)
    assert live.tree(fs) == after
    with live.client() as c:
        tree = c.get(f"/v1/repos/{fs}/tree", params={"recursive": "1"}).json()["entries"]
    assert sorted(e["path"] for e in tree) == ["dir", "keep.txt", "new", "new/file.txt"]
    assert base_of(tu, fs) != old_base
    assert read_archive(pull(tu, fs).content) == after

    # The same sync_id again is not applied again.
    at = head(live, fs)
    again = push(tu, fs, make_archive({"other.txt": b"o"}), sync_id=sync_id)
    assert again.status == "ALREADY_PROCESSED" and head(live, fs) == at
    # DOWN (the client reports a download) and FAILED change nothing.
    for direction, status in (("DOWN", "SUCCESS"), ("UP", "FAILED")):
        ack = tu.filesystems.sync_complete(
            fs, direction=direction, status=status, sync_id=str(uuid.uuid4())
        )
        assert ack.status == "COMPLETED"
    assert head(live, fs) == at and live.tree(fs) == after


def test_archive_sync_is_last_writer_wins(tu: TerminalUseBase, live: ServerProc, fs: str) -> None:
    """Why the adapter does not delete or rename through archives: sync-complete has no
    precondition, so a single-file upload landing between reading the archive version
    and sync-complete is reverted, and nothing afterwards can tell."""
    first = tu.filesystems.upload_file(fs, path="a.txt", request=b"v1", request_options=NO_RETRY)
    snapshot = read_archive(pull(tu, fs).content)
    assert base_of(tu, fs).removeprefix("sha256:") == first.archive_version  # "before" check
    tu.filesystems.upload_file(  # someone else's conditional write, accepted
        fs,
        path="a.txt",
        request=b"v2",
        write_mode="conditional",
        base_version=first.archive_version,
        expected_version=first.file_version,
        request_options=NO_RETRY,
    )
    snapshot.pop("a.txt")
    snapshot["b.txt"] = b"renamed"
    done = push(tu, fs, make_archive(snapshot), sync_id=str(uuid.uuid4()))
    assert done.status == "COMPLETED"
    assert live.tree(fs) == {"b.txt": b"renamed"}  # v2 is gone, without any error


def test_presigned_urls_are_bound_to_method_and_path(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    live.put(fs, "a.txt", b"a")
    down = tu.filesystems.get_download_url(fs).url
    up = tu.filesystems.get_upload_url(fs).url
    # A signature that does not verify is 403, as an object store answers; none is 401.
    assert httpx.put(down, content=b"x").status_code == 403  # a GET URL does not PUT
    assert httpx.get(up).status_code == 403
    tampered = down.replace("X-Repomount-Expires=", "X-Repomount-Expires=9")
    assert httpx.get(tampered).status_code == 403
    assert httpx.get(down.replace(f"/archives/{fs}?", "/archives/other?")).status_code == 403
    assert httpx.get(down.split("?")[0]).status_code == 401
    with pytest.raises(UnprocessableEntityError):
        tu.filesystems.get_upload_url(fs, request=PresignedUrlRequest(expiration_seconds=5))


def test_sync_complete_refuses_what_it_cannot_apply(
    tu: TerminalUseBase, live: ServerProc, fs: str
) -> None:
    live.put(fs, "a.txt", b"a")
    at = head(live, fs)
    files = {"x.txt": b"x"}
    archive = make_archive(files)
    # Never uploaded: sync-complete has nothing to apply.
    with pytest.raises(ApiError) as unknown:
        tu.filesystems.sync_complete(
            fs,
            direction="UP",
            status="SUCCESS",
            sync_id=str(uuid.uuid4()),
            archive_checksum=f"sha256:{sha(archive)}",
        )
    assert unknown.value.status_code == 400
    bad_cases: list[tuple[bytes, dict[str, Any]]] = [
        (archive, {"files": manifest({"y.txt": b"x"})}),  # the manifest lists other files
        (archive, {"files": manifest({"x.txt": b"other content"})}),
        (zstandard.ZstdCompressor().compress(b"not a tar" * 100), {}),
        (b"plain bytes, no zstd", {}),
        (make_archive({"../escape.txt": b"e"}), {}),
        (make_archive({"a": b"file", "a/b": b"below a file"}), {}),
    ]
    for data, extra in bad_cases:
        with pytest.raises(ApiError) as refused:
            push(tu, fs, data, sync_id=str(uuid.uuid4()), **extra)
        assert refused.value.status_code == 400, refused.value.body
    with pytest.raises(ApiError) as size:
        push(tu, fs, archive, sync_id=str(uuid.uuid4()), archive_size_bytes=1)
    assert size.value.status_code == 400
    with pytest.raises(UnprocessableEntityError):
        tu.filesystems.sync_complete(
            fs, direction="UP", status="SUCCESS", sync_id=str(uuid.uuid4())
        )  # no archive_checksum
    assert head(live, fs) == at and live.tree(fs) == {"a.txt": b"a"}
