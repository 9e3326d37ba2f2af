"""Issue 14 on real `sentry:` mounts, checked with the official `sentry-cli`: a file
replaced through the CLI while it is edited in the mount ends with both contents kept;
`cp` of 100 files into a mount is one upload each, which the CLI then lists back with
their checksums; `--dist` mounts the files of one dist."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from support.mount import MountProc
from support.sentrycli import SentryCli
from support.server import ServerProc

pytestmark = pytest.mark.backends("sentry")


def listed(cli: SentryCli, release: str) -> dict[str, str]:
    """name -> size of every file of the release, as `sentry-cli files list` shows it."""
    out = cli.files(release, "list").stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()]
    return {r[0]: r[3] for r in rows if len(r) == 4 and r[0] not in ("Name", "")}


def test_a_cli_replace_during_an_edit_keeps_both(
    server: ServerProc, mount_factory, tmp_path: Path
) -> None:
    cli = SentryCli(server, tmp_path / "home")
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "app.js").write_text("v1\n")
    cli.run("releases", "--org", "acme", "--project", "web", "new", "1.0")
    cli.files("1.0", "upload", str(dist), "--url-prefix", "~")
    m: MountProc = mount_factory("1.0", create=False)
    assert (m.path / "~" / "app.js").read_text() == "v1\n"
    fd = os.open(m.path / "~" / "app.js", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"edited in the mount\n")
        (dist / "app.js").write_text("uploaded by the CLI\n")
        cli.files("1.0", "upload", str(dist), "--url-prefix", "~")  # deletes, uploads again
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.ESTALE
    finally:
        os.close(fd)
    m.sync()
    files = server.tree("1.0")
    assert files.pop("~/app.js") == b"uploaded by the CLI\n"
    [(copy, content)] = files.items()
    assert re.fullmatch(r"~/app\.conflict-\d{8}T\d{6}Z-.+\.js", copy)
    assert content == b"edited in the mount\n"
    assert listed(cli, "1.0") == {"~/app.js": "20B", copy: "20B"}


def test_cp_of_100_files_is_one_upload_each(
    server: ServerProc, mnt: MountProc, tmp_path: Path
) -> None:
    src = tmp_path / "dist"
    src.mkdir()
    files = {f"chunk-{i:03}.js": f"// chunk {i}\n".encode() * (i + 1) for i in range(100)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    target = mnt.path / "~" / "static"
    target.mkdir(parents=True)
    mark = server.mark()
    subprocess.run(
        f"cp {src}/* {target}/", shell=True, check=True, timeout=120
    )  # the release engineer's `cp dist/* .`
    mnt.sync()
    requests = Counter(f"{r.method} {r.status}" for r in server.requests(mark))
    print(f"cp of 100 files into a sentry: mount: {dict(requests)}")
    assert requests["POST 201"] == 100
    assert sum(requests.values()) <= 100 + 3, requests  # and a listing or two
    cli = SentryCli(server, tmp_path / "home")
    with server.client() as c:
        found = c.get(f"/api/0/projects/acme/web/releases/{mnt.repo}/files/").json()
        found += c.get(
            f"/api/0/projects/acme/web/releases/{mnt.repo}/files/", params={"cursor": "100:1:0"}
        ).json()
    assert {f["name"]: f["sha1"] for f in found} == {
        f"~/static/{n}": hashlib.sha1(d).hexdigest() for n, d in files.items()
    }
    assert len(listed(cli, mnt.repo)) == 100


def test_a_mount_of_one_dist(server: ServerProc, mount_factory, tmp_path: Path) -> None:
    """`--dist d1`: the mount shows and writes the files of that dist only."""
    cli = SentryCli(server, tmp_path / "home")
    (tmp_path / "app.js").write_text("no dist\n")
    cli.run("releases", "--org", "acme", "--project", "web", "new", "2.0")
    cli.files("2.0", "upload", str(tmp_path / "app.js"), "~/app.js")
    m: MountProc = mount_factory("2.0", create=False, extra_args=["--dist", "d1"])
    assert os.listdir(m.path) == []
    (m.path / "~").mkdir()
    (m.path / "~" / "app.js").write_text("d1's\n")
    m.sync()
    out = cli.files("2.0", "list").stdout
    assert re.search(r"\|\s*~/app\.js\s*\|\s*\|", out) and re.search(
        r"\|\s*~/app\.js\s*\|\s*d1\s*\|", out
    )
    assert server.tree("2.0") == {"~/app.js": b"no dist\n"}  # d1's files live apart
