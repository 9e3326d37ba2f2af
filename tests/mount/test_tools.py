"""Real editors and tools on a real mount, compared with the same on a local directory.

After each, the remote holds exactly the final files (no swap, backup or temp files,
nothing pending), byte-identical to what the same commands leave on a local disk.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from support.backends import Backend
from support.mount import MountProc, repomount
from support.mountfixtures import MountFactory
from support.server import ServerProc
from support.util import wait_until

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")
# git deletes and renames files the remote has, which Terminal Use cannot do
# (docs/semantics.md): the git tests run where those exist.
WITH_DELETE_AND_RENAME = pytest.mark.backends("native", "relace", "oxen", "sentry")

LOCAL_ONLY = (".*.sw?", "*~", ".#*", "#*#", "4913", ".~lock.*#")
TOOLS = ("vim", "nano", "tmux", "sed", "rsync", "tar", "git", "cp")

missing = [t for t in TOOLS if shutil.which(t) is None]
if missing:
    raise RuntimeError(f"the tool tests need {', '.join(missing)}: run scripts/setup")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def sh(cmd: list[str] | str, cwd: Path, **kw) -> str:
    r = subprocess.run(
        cmd, cwd=cwd, shell=isinstance(cmd, str), capture_output=True, text=True,
        timeout=120, env={**os.environ, **GIT_ENV}, check=False, **kw,
    )  # fmt: skip
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def tree(root: Path, *, skip_local_only: bool = False) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if skip_local_only and any(fnmatch.fnmatchcase(f, p) for p in LOCAL_ONLY):
                continue
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def check_remote(server: ServerProc, m: MountProc, local: Path) -> None:
    """The remote equals the local directory (less local-only names), nothing pending."""
    m.sync()
    expected = tree(local, skip_local_only=True)
    assert server.tree(m.repo) == expected
    status = json.loads(repomount("status", str(m.path), "--json", env=m.env).stdout)
    assert status["pending"] == []
    assert tree(m.path, skip_local_only=True) == expected


# A user's editor or tool writes a temporary name and renames it within a moment; the
# quiet window (`--flush-delay`, 0.5 s by default) is what keeps that name off the
# remote. These tests pin *what* reaches the remote, so they widen the window: on a
# loaded 2-core CI machine 0.5 s between a close and the rename is not guaranteed, and
# every check ends with `repomount sync`, which sends at once.
QUIET_WINDOW = ["--flush-delay", "30", "--max-flush-window", "60"]


@pytest.fixture
def both(mount_factory: MountFactory, tmp_path: Path) -> tuple[MountProc, Path]:
    local = tmp_path / "local"
    local.mkdir()
    return mount_factory(extra_args=QUIET_WINDOW), local


def on_both(both: tuple[MountProc, Path], action: Callable[[Path], None]) -> None:
    m, local = both
    action(local)
    action(m.path)


def _seed(d: Path) -> None:
    (d / "a.txt").write_text("alpha\nbanana\ncarrot\n" * 10)
    (d / "sub").mkdir()
    (d / "sub" / "b.md").write_text("# a title\n\nbody a\n")


WRITES_PER_COMMIT = {"oxen": 4}  # PUT workspace, POST files, POST merge, DELETE workspace
WRITES_PER_SAVE = {"sentry": 2}  # DELETE the file by id, POST the new one
COMMITS_PER_SAVE = {"sentry": 2}  # (each a commit of the store under the face)


def _writes(server: ServerProc, repo: str, since: int) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in server.requests(since=since)
        if r.method in ("PUT", "POST", "DELETE")
        and f"/{repo}/" in r.path
        and not r.path.endswith("/read")  # the test's own look at the tree
    ]


# Every backend runs vim's default save, Python's atomic write, rsync's temp files, cp -r
# and git; the other variants and programs take the same paths through the vfs, so they
# run on native, and on every backend with REPOMOUNT_ALL_BACKENDS=1.
WIDE = pytest.mark.wide_matrix


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param([], id="default"),
        pytest.param(
            ["set backupcopy=no", "set writebackup"], id="backupcopy=no+writebackup", marks=WIDE
        ),
        pytest.param(["set backupcopy=yes"], id="backupcopy=yes", marks=WIDE),
        pytest.param(["set backup"], id="backup", marks=WIDE),
    ],
)
def test_vim(server: ServerProc, both, settings: list[str], backend: Backend) -> None:
    m, local = both
    on_both(both, _seed)
    m.sync()

    def edit(d: Path) -> None:
        args = ["vim", "-Es"]
        for s in settings:
            args += ["-c", s]
        sh([*args, "-c", "%s/a/b/", "-c", "wq", "a.txt"], d)

    mark = server.mark()
    head = _head(server, m.repo)
    on_both(both, edit)
    assert (m.path / "a.txt").read_text().startswith("blpha\nbbnana")
    check_remote(server, m, local)
    writes = _writes(server, m.repo, mark)
    # One save, one commit: one request, except on Oxen, where a commit is a workspace
    # opened, filled, committed and closed, and on Sentry, which has no replace: the file
    # deleted by id, then the new one (docs/remotes.md).
    expected = WRITES_PER_COMMIT.get(backend.name, WRITES_PER_SAVE.get(backend.name, 1))
    assert len(writes) == expected, writes
    assert int(_head(server, m.repo)) == int(head) + COMMITS_PER_SAVE.get(backend.name, 1)
    # No swap, backup or test file ever reached the remote.
    assert _paths_written_since(server, m.repo, head) == {"a.txt"}


@WIDE
def test_nano_through_tmux(server: ServerProc, both) -> None:
    m, local = both
    on_both(both, _seed)

    def edit(d: Path) -> None:
        session = f"nano{os.getpid()}{d.name}"
        sh(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24",
            f"nano {d / 'a.txt'}"], d)  # fmt: skip

        def shows(*texts: str) -> Callable[[], bool]:
            """Whether nano's screen (the tmux pane) shows each of `texts`."""

            def check() -> bool:
                pane = _pane(session)
                return all(text in pane for text in texts)

            return check

        try:
            wait_until(shows("[ Read ", "^X Exit"), 10, "nano to show the file")
            sh(["tmux", "send-keys", "-t", session, "NEW FIRST LINE", "Enter"], d)
            sh(["tmux", "send-keys", "-t", session, "C-o"], d)
            wait_until(shows("File Name to Write:"), 10, "nano's file name prompt")
            sh(["tmux", "send-keys", "-t", session, "Enter"], d)
            wait_until(shows("[ Wrote "), 10, "nano's '[ Wrote N lines ]'")
            sh(["tmux", "send-keys", "-t", session, "C-x"], d)
            wait_until(lambda: not _tmux_has(session), 10, "nano to exit")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

    on_both(both, edit)
    assert (m.path / "a.txt").read_text().startswith("NEW FIRST LINE\nalpha")
    check_remote(server, m, local)


def _pane(session: str) -> str:
    """What the tmux session's screen shows now ("" once it is gone)."""
    r = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True)
    return r.stdout.decode(errors="replace")


def _tmux_has(session: str) -> bool:
    return (
        subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
    )


@WIDE
def test_sed_in_place(server: ServerProc, both) -> None:
    m, local = both
    on_both(both, _seed)
    on_both(both, lambda d: sh(["sed", "-i", "s/banana/BANANA/", "a.txt", "sub/b.md"], d))
    on_both(both, lambda d: sh(["sed", "-i.bak", "s/carrot/CARROT/", "a.txt"], d))
    check_remote(server, m, local)


def _paths_written_since(server: ServerProc, repo: str, head: str) -> set[str]:
    """Every path any commit touched after `head` (the server's own record)."""
    with server.client() as c:
        r = c.get(f"/v1/repos/{repo}/changes", params={"since": head})
        r.raise_for_status()
        return {ch["path"] for ch in r.json()["changes"]}


def _head(server: ServerProc, repo: str) -> str:
    with server.client() as c:
        return c.get(f"/v1/repos/{repo}").json()["head"]


@pytest.mark.parametrize("fsync", [False, True], ids=["close", "fsync"])
def test_python_atomic_write(server: ServerProc, both, fsync: bool, backend: Backend) -> None:
    m, local = both
    on_both(both, _seed)
    m.sync()

    def save(d: Path) -> None:
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=d, prefix=".a.txt.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write("atomically replaced\n")
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, d / "a.txt")

    head = _head(server, m.repo)
    if fsync and "rename" not in backend.can:
        # The fsync put the temporary file on the remote, which has no rename: refused,
        # and both files stay, intact (docs/semantics.md, Terminal Use).
        with pytest.raises(PermissionError):
            save(m.path)
        m.sync()
        tree_now = server.tree(m.repo)
        assert tree_now.pop("a.txt") == (local / "a.txt").read_bytes()
        assert tree_now.pop("sub/b.md") == (local / "sub" / "b.md").read_bytes()
        assert list(tree_now.values()) == [b"atomically replaced\n"]
        return
    on_both(both, save)
    check_remote(server, m, local)
    written = _paths_written_since(server, m.repo, head)
    if not fsync:  # the temporary name never reached the remote
        assert written == {"a.txt"}, written
    else:  # fsync promised the temp file to the remote; the rename then moved it
        assert "a.txt" in written


@pytest.mark.parametrize(
    "mode",
    [pytest.param([], id="temp-files"), pytest.param(["--inplace"], id="inplace", marks=WIDE)],
)
def test_rsync_in_and_out(server: ServerProc, both, tmp_path: Path, mode: list[str]) -> None:
    m, local = both
    src = tmp_path / "src"
    src.mkdir()
    _seed(src)
    (src / "bin").mkdir()
    (src / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "bin" / "run.sh").chmod(0o755)
    (src / "blob.bin").write_bytes(os.urandom(300_000))
    for d in (local, m.path):
        sh(["rsync", "-a", *mode, f"{src}/", f"{d}/copy/"], tmp_path)
    check_remote(server, m, local)
    assert (m.path / "copy" / "bin" / "run.sh").stat().st_mode & 0o111
    # Change one file and sync again: only that goes up.
    (src / "a.txt").write_text("changed\n")
    for d in (local, m.path):
        sh(["rsync", "-a", *mode, f"{src}/", f"{d}/copy/"], tmp_path)
    check_remote(server, m, local)
    out = tmp_path / "out"
    sh(["rsync", "-a", f"{m.path}/copy/", f"{out}/"], tmp_path)
    assert tree(out) == tree(src)


@WIDE
def test_tar_x_and_c(server: ServerProc, both, tmp_path: Path) -> None:
    m, local = both
    src = tmp_path / "src"
    src.mkdir()
    _seed(src)
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "x.bin").write_bytes(os.urandom(50_000))
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname="proj")
    for d in (local, m.path):
        sh(["tar", "xf", str(archive)], d)
    check_remote(server, m, local)
    out = tmp_path / "out.tar"
    sh(["tar", "cf", str(out), "proj"], m.path)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    sh(["tar", "xf", str(out)], extracted)
    assert tree(extracted / "proj") == tree(src)


def test_cp_r(server: ServerProc, both, tmp_path: Path) -> None:
    m, local = both
    src = tmp_path / "src"
    src.mkdir()
    _seed(src)
    for d in (local, m.path):
        sh(["cp", "-r", str(src), str(d / "copy")], tmp_path)
        sh(["cp", "-a", str(src), str(d / "copy-a")], tmp_path)
    check_remote(server, m, local)


@WITH_DELETE_AND_RENAME
def test_git_inside_the_mount(server: ServerProc, both) -> None:
    m, local = both

    def work(d: Path) -> None:
        sh(["git", "init", "-q", "-b", "main", "proj"], d)
        p = d / "proj"
        _seed(p)
        sh(["git", "add", "-A"], p)
        sh(["git", "commit", "-q", "-m", "first"], p)
        sh(["git", "checkout", "-q", "-b", "feature"], p)
        (p / "a.txt").write_text("changed on feature\n")
        (p / "new.txt").write_text("new\n")
        sh(["git", "add", "-A"], p)
        sh(["git", "commit", "-q", "-m", "second"], p)
        sh(["git", "checkout", "-q", "main"], p)

    on_both(both, work)
    p = m.path / "proj"
    assert sh(["git", "status", "--porcelain"], p) == ""
    assert sh(["git", "log", "--format=%s", "feature"], p).split() == ["second", "first"]
    sh(["git", "fsck", "--no-progress"], p)
    m.sync()
    remote = server.tree(m.repo)
    # The working tree is byte-identical to the local run; .git is complete remotely.
    work_tree = {k: v for k, v in remote.items() if not k.startswith("proj/.git/")}
    local_work = tree(local)
    assert work_tree == {k: v for k, v in local_work.items() if not k.startswith("proj/.git/")}
    assert {k for k in remote if k.startswith("proj/.git/")} == {
        k for k in tree(m.path) if k.startswith("proj/.git/")
    }
    assert not [k for k in remote if k.endswith(".lock")]


@WIDE
@WITH_DELETE_AND_RENAME
def test_git_clone_into_the_mount(server: ServerProc, both, tmp_path: Path) -> None:
    m, local = both
    origin = tmp_path / "origin"
    origin.mkdir()
    sh(["git", "init", "-q", "-b", "main"], origin)
    _seed(origin)
    (origin / "script.sh").write_text("#!/bin/sh\n")
    (origin / "script.sh").chmod(0o755)
    sh(["git", "add", "-A"], origin)
    sh(["git", "commit", "-q", "-m", "init"], origin)
    for d in (local, m.path):
        sh(["git", "clone", "-q", str(origin), "clone"], d)
    p = m.path / "clone"
    assert sh(["git", "status", "--porcelain"], p) == ""
    assert (p / "script.sh").stat().st_mode & 0o111
    m.sync()
    remote = server.tree(m.repo)
    expected = {k: v for k, v in tree(local).items() if not k.startswith("clone/.git/")}
    assert {k: v for k, v in remote.items() if not k.startswith("clone/.git/")} == expected
