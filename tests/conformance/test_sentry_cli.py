"""The server's Sentry face, driven by the official `sentry-cli` 2.58.6 (its release-file
commands, which 3.x removed).

What is asserted is what Sentry does, as docs/remotes.md ("Sentry") describes it: the
requests the CLI sends (chunk-upload answered 404, so it takes the legacy path), the
409 on a taken name, `Link` pagination over two pages at project and organization
level, deletes one by one and all at once. What the CLI never sends (PUT rename,
`?download=1`, error shapes) is in tests/server/test_sentry_face.py.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from urllib.parse import quote

import pytest

from support.sentrycli import VERSION, SentryCli
from support.server import ServerProc

_ids = itertools.count()


@pytest.fixture(scope="module")
def cli(live: ServerProc, tmp_path_factory: pytest.TempPathFactory) -> SentryCli:
    return SentryCli(live, tmp_path_factory.mktemp("sentry-home"))


@pytest.fixture
def release(cli: SentryCli) -> str:
    version = f"web@1.{next(_ids)}.0+build"  # not a repository name: kept under a hash
    assert (
        "Created release"
        in cli.run("releases", "--org", "acme", "--project", "web", "new", version).stdout
    )
    return version


def listed(cli: SentryCli, release: str, project: str | None = "web") -> list[list[str]]:
    """The rows of `files list`: name, distribution, source map, size."""
    out = cli.files(release, "list", project=project).stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()]
    return [r for r in rows if len(r) == 4 and r[0] not in ("Name", "")]


def test_the_pinned_version(cli: SentryCli) -> None:
    assert cli.version() == f"sentry-cli {VERSION}"


def test_releases_new_creates_once(cli: SentryCli, live: ServerProc) -> None:
    mark = live.mark()
    version = f"v{next(_ids)}"
    cli.run("releases", "--org", "acme", "--project", "web", "new", version)
    cli.run("releases", "--org", "acme", "--project", "web", "new", version)  # 208: fine
    assert [f"{r.method} {r.status}" for r in live.requests(mark)] == ["POST 201", "POST 208"]
    with live.client() as c:  # a version that is a repository name names the repository
        assert c.get(f"/v1/repos/{version}").status_code == 200


def test_upload_one_file_with_a_header_then_the_409(
    cli: SentryCli, live: ServerProc, release: str, tmp_path: Path
) -> None:
    (tmp_path / "app.min.js").write_bytes(b"console.log(1)\n")
    mark = live.mark()
    out = cli.files(
        release,
        "upload",
        "app.min.js",
        "~/static/app.min.js",
        "-H",
        "Sourcemap: app.js.map",
        cwd=tmp_path,
    ).stdout
    assert f"A {hashlib.sha1(b'console.log(1)' + bytes([10])).hexdigest()}" in out
    files = f"/api/0/projects/acme/web/releases/{quote(release, safe='@')}/files/"
    assert [(r.method, r.path, r.status) for r in live.requests(mark)] == [
        ("GET", "/api/0/organizations/acme/chunk-upload/", 404),  # so: the legacy upload
        ("POST", "/api/0/projects/acme/web/releases/", 208),  # the release exists
        ("POST", files, 201),
    ]
    again = cli.files(
        release, "upload", "app.min.js", "~/static/app.min.js", check=False, cwd=tmp_path
    )
    assert again.returncode != 0 and "File already present!" in again.stderr
    assert listed(cli, release) == [["~/static/app.min.js", "", "app.js.map", "15B"]]


def test_upload_a_directory_with_a_prefix_and_a_dist_twice(
    cli: SentryCli, live: ServerProc, release: str, tmp_path: Path
) -> None:
    """The second upload replaces what the first one left (list, delete each, upload)."""
    dist = tmp_path / "dist"
    (dist / "js").mkdir(parents=True)
    (dist / "js" / "app.js").write_text("one\n")
    (dist / "js" / "app.js.map").write_text('{"version":3}\n')
    cli.files(release, "upload", str(dist), "--url-prefix", "~/static", "-d", "d1")
    (dist / "js" / "app.js").write_text("two!\n")
    mark = live.mark()
    cli.files(release, "upload", str(dist), "--url-prefix", "~/static", "-d", "d1")
    methods = sorted(r.method for r in live.requests(mark) if "/files/" in r.path)
    assert methods == ["DELETE", "DELETE", "GET", "POST", "POST"]
    assert listed(cli, release) == [
        ["~/static/js/app.js", "d1", "", "5B"],
        ["~/static/js/app.js.map", "d1", "", "14B"],
    ]
    cli.files(release, "upload", str(dist / "js" / "app.js"), "~/static/js/app.js")
    assert [r[:2] for r in listed(cli, release)] == [
        ["~/static/js/app.js", ""],  # a name is taken per dist
        ["~/static/js/app.js", "d1"],
        ["~/static/js/app.js.map", "d1"],
    ]


def test_list_of_150_files_is_two_pages_at_both_levels(cli: SentryCli, live: ServerProc) -> None:
    version = f"many{next(_ids)}"
    live.create_repo(version)  # every repository is a release: seeded natively, fast
    with live.client() as c:
        ops = [
            {"op": "write", "path": f"~/m/f{i:03}.js", "content_b64": "eAo="} for i in range(150)
        ]
        c.post(f"/v1/repos/{version}/commits", json={"operations": ops}).raise_for_status()
    for project in ("web", None):
        mark = live.mark()
        rows = listed(cli, version, project=project)
        assert [r[0] for r in rows] == [f"~/m/f{i:03}.js" for i in range(150)]
        pages = [r for r in live.requests(mark) if r.path.endswith("/files/")]
        level = "projects/acme/web" if project else "organizations/acme"
        assert [(r.path, r.status) for r in pages] == [
            (f"/api/0/{level}/releases/{version}/files/", 200)
        ] * 2


def test_delete_by_name_and_all(
    cli: SentryCli, live: ServerProc, release: str, tmp_path: Path
) -> None:
    for name in ("a.js", "b.js"):
        (tmp_path / name).write_text(name)
        cli.files(release, "upload", str(tmp_path / name), f"~/{name}")
    cli.files(release, "upload", str(tmp_path / "a.js"), "~/a.js", "-d", "d2")
    out = cli.files(release, "delete", "~/a.js").stdout
    assert "D ~/a.js" in out
    assert [r[:2] for r in listed(cli, release)] == [["~/b.js", ""]]  # the CLI deletes every dist's
    assert "All files deleted." in cli.files(release, "delete", "--all").stdout
    assert listed(cli, release) == []
    missing = cli.files(release, "delete", "~/nothing.js")
    assert "D ~/nothing.js" not in missing.stdout
