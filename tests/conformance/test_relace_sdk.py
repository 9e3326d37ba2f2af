"""The server's Relace face, driven by the official `relace` SDK (2.1.0).

What is asserted is what the real service does (status codes, bodies, the three-phase
diff order), as docs/remotes.md ("Relace") describes it, with the face's documented
choice where the service leaves one open.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import relace
from relace import APIStatusError, AuthenticationError, NotFoundError, UnprocessableEntityError
from relace.types import RepoInfo

from support.server import ServerProc
from support.slow_upload import hold_lock

HEX40 = re.compile(r"[0-9a-f]{40}")


@pytest.fixture(scope="module")
def server(live: ServerProc) -> ServerProc:
    """One real server for the module, for speed: every test makes its own repos."""
    return live


@pytest.fixture
def client(server: ServerProc) -> Iterator[relace.Relace]:
    # max_retries=0: every request the SDK makes shows in the access log exactly once.
    with relace.Relace(
        api_key=server.token, base_url=f"{server.url}/relace/v1", max_retries=0
    ) as c:
        yield c


def files_of(client: relace.Relace, repo_id: str, commit: str | None = None) -> dict[str, str]:
    if commit is None:
        cloned = client.repo.clone(repo_id)
    else:
        cloned = client.repo.clone(repo_id, commit=commit)
    return {f.filename: f.content for f in cloned.files}


def make(client: relace.Relace, files: dict[str, str], **kwargs: object) -> str:
    source = {"type": "files", "files": [{"filename": k, "content": v} for k, v in files.items()]}
    info = client.repo.create(source=source, **kwargs)  # type: ignore[arg-type]
    return info.repo_id


def diff(client: relace.Relace, repo_id: str, *ops: dict[str, str]) -> RepoInfo:
    source: Any = {"type": "diff", "operations": list(ops)}  # the SDK's TypedDicts, loosely
    return client.repo.update(repo_id, source=source)


def write(path: str, content: str) -> dict[str, str]:
    return {"type": "write", "filename": path, "content": content}


def delete(path: str) -> dict[str, str]:
    return {"type": "delete", "filename": path}


def rename(old: str, new: str) -> dict[str, str]:
    return {"type": "rename", "old_filename": old, "new_filename": new}


# --------------------------------------------------------------------------- repos


def test_create_get_list_delete(client: relace.Relace) -> None:
    before = datetime.now(UTC)
    info = client.repo.create(
        metadata={"name": "demo", "team": "crud"},
        source={"type": "files", "files": [{"filename": "src/a.ts", "content": "x"}]},
    )
    assert uuid.UUID(info.repo_id).version == 4
    assert HEX40.fullmatch(info.repo_head)

    meta = client.repo.get(info.repo_id)
    assert meta.repo_id == info.repo_id
    assert meta.metadata == {"name": "demo", "team": "crud"}
    assert before - timedelta(seconds=1) <= meta.created_at <= datetime.now(UTC)
    assert meta.updated_at is not None and meta.updated_at >= meta.created_at
    assert meta.model_extra == {"auto_index": False}  # documented, not in the SDK model
    assert "repo_head" not in meta.model_dump()  # GET /repo/{id} has no head

    mine = json.dumps({"team": "crud"})
    listed = client.repo.list(filter_metadata=mine)
    assert [r.repo_id for r in listed.items] == [info.repo_id]
    assert listed.total_items == 1 and listed.next_page is None

    deleted = client.repo.with_raw_response.delete(info.repo_id)
    assert deleted.status_code == 204 and deleted.http_response.content == b""
    assert deleted.parse() is None
    with pytest.raises(NotFoundError):
        client.repo.get(info.repo_id)
    with pytest.raises(NotFoundError):
        client.repo.delete(info.repo_id)
    assert client.repo.list(filter_metadata=mine).items == []


def test_create_empty_with_auto_index(client: relace.Relace) -> None:
    info = client.repo.create(extra_body={"auto_index": True})
    assert HEX40.fullmatch(info.repo_head)
    assert client.repo.clone(info.repo_id).files == []  # `files` is always there
    meta = client.repo.get(info.repo_id)
    assert meta.metadata is None
    assert meta.model_extra == {"auto_index": True}


def test_create_from_a_relace_template(client: relace.Relace) -> None:
    template = make(client, {"a.txt": "A", "d/b.txt": "B"}, metadata={"kind": "template"})
    copy = client.repo.create(
        source={"type": "relace", "repo_id": template, "copy_metadata": True}
    ).repo_id
    assert copy != template
    assert files_of(client, copy) == {"a.txt": "A", "d/b.txt": "B"}
    assert client.repo.get(copy).metadata == {"kind": "template"}
    diff(client, copy, write("a.txt", "changed"))
    assert files_of(client, template)["a.txt"] == "A"  # a copy, not a link
    with pytest.raises(NotFoundError):
        client.repo.create(source={"type": "relace", "repo_id": str(uuid.uuid4())})


def test_list_pages_orders_and_filters(client: relace.Relace) -> None:
    tag = json.dumps({"suite": "list"})
    ids = [client.repo.create(metadata={"suite": "list", "i": str(i)}).repo_id for i in range(5)]
    client.repo.create(metadata={"suite": "other"})

    seen, start = [], 0
    while True:
        page = client.repo.list(filter_metadata=tag, page_size=2, page_start=start)
        assert page.total_items == 5
        seen += [r.repo_id for r in page.items]
        if page.next_page is None:
            break
        assert page.next_page == start + 2
        start = page.next_page
    assert seen == ids  # created_at, ascending, by default

    newest_first = client.repo.list(filter_metadata=tag, order_descending=True)
    assert [r.repo_id for r in newest_first.items] == ids[::-1]

    client.repo.update(ids[0], metadata={"suite": "list", "i": "0", "touched": "yes"})
    by_update = client.repo.list(filter_metadata=tag, order_by="updated_at")
    assert by_update.items[-1].repo_id == ids[0]

    cut = client.repo.get(ids[2]).created_at
    after = client.repo.list(filter_metadata=tag, created_after=cut)
    assert [r.repo_id for r in after.items] == ids[3:]
    before = client.repo.list(filter_metadata=tag, created_before=cut)
    assert [r.repo_id for r in before.items] == ids[:2]


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 0},
        {"page_size": 101},
        {"page_start": -1},
        {"order_by": "name"},
        {"filter_metadata": "not json"},
    ],
)
def test_list_validation_is_a_fastapi_422(client: relace.Relace, params: dict[str, object]) -> None:
    with pytest.raises(UnprocessableEntityError) as caught:
        client.repo.list(**params)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict) and body["detail"][0]["loc"][0] == "query"


# --------------------------------------------------------------------------- update


def test_diff_applies_deletes_then_writes_then_renames(client: relace.Relace) -> None:
    repo = make(client, {"a.txt": "old a", "x.txt": "x", "keep.txt": "k"})
    # Sequentially this would mean: b = old a, a = new, x gone. The service runs all
    # deletes, then all writes, then all renames: the write of `a` lands before the
    # rename moves it, and the delete of `x` runs before its write.
    info = diff(
        client,
        repo,
        rename("a.txt", "b.txt"),
        write("a.txt", "new a"),
        write("x.txt", "x again"),
        delete("x.txt"),
    )
    assert files_of(client, repo) == {"b.txt": "new a", "x.txt": "x again", "keep.txt": "k"}
    assert set(info.changed_files or []) == {"b.txt", "a.txt", "x.txt"}
    assert HEX40.fullmatch(info.repo_head)


def test_diff_last_write_wins_and_parents_are_created(client: relace.Relace) -> None:
    repo = make(client, {})
    diff(client, repo, write("deep/er/f.txt", "1"), write("deep/er/f.txt", "2"))
    assert files_of(client, repo) == {"deep/er/f.txt": "2"}


def test_diff_delete_of_a_directory_is_recursive(client: relace.Relace, server: ServerProc) -> None:
    repo = make(client, {"d/a.txt": "a", "d/e/b.txt": "b", "top.txt": "t"})
    diff(client, repo, delete("d"))
    assert files_of(client, repo) == {"top.txt": "t"}
    # No empty directories are left behind in the store either (git has none).
    assert server.tree(repo) == {"top.txt": b"t"}
    with server.client() as native:
        entries = native.get(f"/v1/repos/{repo}/tree", params={"recursive": "1"}).json()
    assert [e["path"] for e in entries["entries"]] == ["top.txt"]


def test_a_failing_operation_fails_the_whole_update(client: relace.Relace) -> None:
    repo = make(client, {"a.txt": "a"})
    head = client.repo.file.delete("a.txt", repo_id=repo).repo_head  # an empty repo now
    diff(client, repo, write("a.txt", "a"))
    with pytest.raises(NotFoundError):
        diff(client, repo, write("new.txt", "n"), delete("missing.txt"))
    with pytest.raises(NotFoundError):
        diff(client, repo, write("new.txt", "n"), rename("missing.txt", "m.txt"))
    assert files_of(client, repo) == {"a.txt": "a"}  # nothing of either was applied
    assert files_of(client, repo, commit=head) == {}


def test_write_then_delete_of_a_new_file_is_a_404(client: relace.Relace) -> None:
    # Sequentially a no-op; but the delete runs first, when the file does not exist yet.
    repo = make(client, {})
    with pytest.raises(NotFoundError):
        diff(client, repo, write("n.txt", "n"), delete("n.txt"))


def test_rename_is_for_files_only(client: relace.Relace) -> None:
    repo = make(client, {"d/a.txt": "a", "f.txt": "f"})
    with pytest.raises(relace.BadRequestError):
        diff(client, repo, rename("d", "e"))
    with pytest.raises(relace.BadRequestError):  # onto a directory
        diff(client, repo, rename("f.txt", "d"))
    diff(client, repo, rename("d/a.txt", "e/a.txt"))  # a directory "rename", file by file
    assert files_of(client, repo) == {"e/a.txt": "a", "f.txt": "f"}


def test_update_with_files_replaces_the_whole_set(client: relace.Relace) -> None:
    repo = make(client, {"a.txt": "a", "b.txt": "b", "d/c.txt": "c"})
    info = client.repo.update(
        repo,
        source={
            "type": "files",
            "files": [{"filename": "a.txt", "content": "a"}, {"filename": "n.txt", "content": ""}],
        },
    )
    assert files_of(client, repo) == {"a.txt": "a", "n.txt": ""}
    assert sorted(info.changed_files or []) == ["b.txt", "d/c.txt", "n.txt"]


def test_update_metadata_replaces_it(client: relace.Relace) -> None:
    repo = make(client, {"a.txt": "a"}, metadata={"a": "1", "b": "2"})
    before = client.repo.get(repo)
    head = files_of(client, repo)
    time.sleep(0.01)  # not a wait: a gap, so the update's updated_at is later
    client.repo.update(repo, metadata={"c": "3"})
    after = client.repo.get(repo)
    assert after.metadata == {"c": "3"}
    assert after.updated_at is not None and before.updated_at is not None
    assert after.updated_at > before.updated_at
    assert files_of(client, repo) == head


def test_update_with_neither_source_nor_metadata_is_422(
    client: relace.Relace, server: ServerProc
) -> None:
    repo = make(client, {})
    with pytest.raises(UnprocessableEntityError):
        client.repo.update(repo)
    assert server.requests()[-1].status == 422


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ({"type": "patch"}, UnprocessableEntityError),
        ({"type": "files"}, UnprocessableEntityError),
        (
            {"type": "diff", "operations": [{"type": "chmod", "filename": "a"}]},
            relace.BadRequestError,
        ),
        ({"type": "diff", "operations": [write("../up.txt", "x")]}, relace.BadRequestError),
        ({"type": "diff", "operations": [write("/abs.txt", "x")]}, relace.BadRequestError),
        ({"type": "diff", "operations": [write("a.txt/under", "x")]}, relace.BadRequestError),
    ],
)
def test_bad_updates(client: relace.Relace, source: dict[str, object], error: type) -> None:
    repo = make(client, {"a.txt": "a"})
    with pytest.raises(error):
        client.repo.update(repo, source=source)  # type: ignore[arg-type]
    assert files_of(client, repo) == {"a.txt": "a"}


def test_json_paths_are_normalised(client: relace.Relace) -> None:
    repo = make(client, {"./x//y.txt": "1", "z/": "2"})
    assert files_of(client, repo) == {"x/y.txt": "1", "z": "2"}


# --------------------------------------------------------------------------- clone


def test_clone_at_an_older_commit(client: relace.Relace) -> None:
    info = client.repo.create(
        source={"type": "files", "files": [{"filename": "a.txt", "content": "v1"}]}
    )
    second = diff(client, info.repo_id, write("a.txt", "v2"), write("b.txt", "b"))
    assert second.repo_head != info.repo_head
    diff(client, info.repo_id, delete("b.txt"))
    assert files_of(client, info.repo_id) == {"a.txt": "v2"}
    assert files_of(client, info.repo_id, commit=info.repo_head) == {"a.txt": "v1"}
    assert files_of(client, info.repo_id, commit=second.repo_head) == {"a.txt": "v2", "b.txt": "b"}
    other = make(client, {})
    with pytest.raises(NotFoundError):  # a head of another repo
        client.repo.clone(other, commit=info.repo_head)
    with pytest.raises(NotFoundError):
        client.repo.clone(info.repo_id, commit="0" * 40)


def test_clone_leaves_out_binary_files(client: relace.Relace) -> None:
    repo = make(client, {"t.txt": "text"})
    client.repo.file.upload("b.bin", b"\x00\xff\xfe", repo_id=repo)
    assert files_of(client, repo) == {"t.txt": "text"}


# --------------------------------------------------------------------------- single files


def test_file_upload_download_delete(client: relace.Relace, server: ServerProc) -> None:
    repo = make(client, {})
    data = bytes(range(256)) * 10
    raw = client.repo.file.with_raw_response.upload("bin/blob.dat", data, repo_id=repo)
    assert raw.status_code == 201
    created = raw.parse()
    assert created.repo_id == repo and created.changed_files == ["bin/blob.dat"]
    raw = client.repo.file.with_raw_response.upload("bin/blob.dat", b"v2", repo_id=repo)
    assert raw.status_code == 200  # an overwrite
    assert raw.parse().repo_head != created.repo_head

    got = client.repo.file.with_raw_response.download("bin/blob.dat", repo_id=repo)
    assert got.http_response.content == b"v2"
    assert got.http_response.headers["content-type"] == "application/octet-stream"
    client.repo.file.upload("package.json", b'{"a": 1}', repo_id=repo)
    assert client.repo.file.download("package.json", repo_id=repo) == '{"a": 1}'  # not parsed

    deleted = client.repo.file.delete("bin/blob.dat", repo_id=repo)
    assert deleted.changed_files == ["bin/blob.dat"]
    with pytest.raises(NotFoundError):
        client.repo.file.download("bin/blob.dat", repo_id=repo)
    with pytest.raises(NotFoundError):
        client.repo.file.delete("bin/blob.dat", repo_id=repo)
    with pytest.raises(NotFoundError):  # a directory is not a file
        client.repo.file.download("bin", repo_id=repo)
    assert server.tree(repo) == {"package.json": b'{"a": 1}'}


def test_upload_streams_chunked_bodies(client: relace.Relace) -> None:
    repo = make(client, {})
    client.repo.file.upload("big.txt", iter([b"a" * 70_000, b"b" * 70_000]), repo_id=repo)
    assert files_of(client, repo) == {"big.txt": "a" * 70_000 + "b" * 70_000}


def test_file_paths_are_percent_decoded(client: relace.Relace) -> None:
    repo = make(client, {})
    for name in ("dir/a b.txt", "ünï cödé.txt", "q?x=1.txt", "h#sh.txt", "pct%41.txt"):
        # The SDK does not encode paths; callers must (reference §4.3).
        client.repo.file.upload(quote(name, safe="/"), name.encode(), repo_id=repo)
    client.repo.file.upload("src%2Fmain.py", b"print()", repo_id=repo)  # %2F is a slash
    assert files_of(client, repo) == {
        "dir/a b.txt": "dir/a b.txt",
        "ünï cödé.txt": "ünï cödé.txt",
        "q?x=1.txt": "q?x=1.txt",
        "h#sh.txt": "h#sh.txt",
        "pct%41.txt": "pct%41.txt",
        "src/main.py": "print()",
    }
    with pytest.raises(relace.BadRequestError):
        client.repo.file.upload("a/%2E%2E/b", b"x", repo_id=repo)


def test_upload_onto_a_directory_or_under_a_file_is_400(client: relace.Relace) -> None:
    repo = make(client, {"d/a.txt": "a", "f.txt": "f"})
    with pytest.raises(relace.BadRequestError):
        client.repo.file.upload("d", b"x", repo_id=repo)
    with pytest.raises(relace.BadRequestError):
        client.repo.file.upload("f.txt/x", b"x", repo_id=repo)


def test_where_a_directory_vanished_a_file_can_go(client: relace.Relace) -> None:
    repo = make(client, {"d/only.txt": "o"})
    client.repo.file.delete("d/only.txt", repo_id=repo)  # `d` is gone with its last file
    client.repo.file.upload("d", b"now a file", repo_id=repo)
    assert files_of(client, repo) == {"d": "now a file"}


# --------------------------------------------------------------------------- errors


def test_unknown_and_malformed_repo_ids(client: relace.Relace, server: ServerProc) -> None:
    unknown = str(uuid.uuid4())
    calls = [
        lambda r: client.repo.get(r),
        lambda r: client.repo.clone(r),
        lambda r: client.repo.update(r, metadata={"a": "b"}),
        lambda r: client.repo.delete(r),
        lambda r: client.repo.file.upload("a.txt", b"x", repo_id=r),
        lambda r: client.repo.file.download("a.txt", repo_id=r),
        lambda r: client.repo.file.delete("a.txt", repo_id=r),
    ]
    mark = server.mark()
    for call in calls:
        with pytest.raises(NotFoundError) as caught:
            call(unknown)
        assert caught.value.body == {"detail": "Repo not found"}
        with pytest.raises(UnprocessableEntityError) as bad:
            call("not-a-uuid")
        body = bad.value.body
        assert isinstance(body, dict)
        assert body["detail"][0]["loc"] == ["path", "repo_id"]
    assert {line.status for line in server.requests(mark)} == {404, 422}


def test_a_wrong_key_is_401(server: ServerProc) -> None:
    base_url = f"{server.url}/relace/v1"
    with (
        relace.Relace(api_key="rlc-wrong", base_url=base_url, max_retries=0) as bad,
        pytest.raises(AuthenticationError),
    ):
        bad.repo.list()


def test_a_busy_repo_answers_423_which_the_sdk_does_not_retry(
    client: relace.Relace, server: ServerProc
) -> None:
    repo = make(client, {"a.txt": "a"})
    url = f"/relace/v1/repo/{repo}/update"
    source: Any = {"type": "diff", "operations": [write("probe.txt", "p")]}
    # Default retries, and yet one request: 423 is not a status the SDK retries.
    with relace.Relace(api_key=server.token, base_url=f"{server.url}/relace/v1") as default:
        marks: list[int] = []

        def probe() -> bool:
            marks.append(server.mark())
            try:
                default.repo.update(repo, source=source)
            except APIStatusError as error:
                assert error.status_code == 423
                return True
            return False

        upload = hold_lock(server, f"/relace/v1/repo/{repo}/file/slow.txt", probe)
        assert [line.status for line in server.requests(marks[-1]) if line.path == url] == [423]
        assert upload.finish() == 201
    diff(client, repo, delete("a.txt"))  # unlocked again
    files = files_of(client, repo)
    files.pop("probe.txt", None)  # written if a probe came before the lock was taken
    assert files == {"slow.txt": "first half, second half"}


# --------------------------------------------------------------------------- one store


def test_the_face_and_the_native_api_share_the_store(
    client: relace.Relace, server: ServerProc
) -> None:
    repo = make(client, {"a.txt": "from relace"})
    assert server.tree(repo) == {"a.txt": b"from relace"}  # the repo id is its store name
    server.put(repo, "n.txt", b"from native")
    assert files_of(client, repo) == {"a.txt": "from relace", "n.txt": "from native"}

    server.create_repo("repo3")  # a native repo is a Relace repo named by its store name
    server.put("repo3", "src/x.py", b"x = 1\n")
    assert files_of(client, "repo3") == {"src/x.py": "x = 1\n"}
    assert client.repo.get("repo3").metadata is None
    diff(client, "repo3", rename("src/x.py", "src/y.py"), write("README", "hi"))
    assert server.tree("repo3") == {"src/y.py": b"x = 1\n", "README": b"hi"}
    assert {repo, "repo3"} <= {r.repo_id for r in client.repo.list().items}
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(f"/relace/v1/repo/{repo}").status_code == 401
