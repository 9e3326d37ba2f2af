"""The server's Terminal Use face, driven by the official `terminaluse` SDK (0.35.0):
archives. A filesystem's tree as a tar.zst behind presigned download and upload URLs,
and sync-complete applying a pushed archive (last writer wins), or refusing one it
cannot apply. As in test_terminaluse_sdk.py, what is asserted is what the real service
does (docs/remotes.md, "Terminal Use").
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from typing import Any

import httpx
import pytest
import zstandard
from terminaluse.client import TerminalUseBase
from terminaluse.core.api_error import ApiError
from terminaluse.errors import UnprocessableEntityError
from terminaluse.types import PresignedUrlRequest

from support.server import ServerProc
from support.tusdk import NO_RETRY, base_of, head
from support.util import sha


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
