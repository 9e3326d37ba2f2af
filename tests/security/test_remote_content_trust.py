"""Repo content is data, not code (issue 18 #1, #2), replayed with real mounts, real git
and a real shell; everything planted through the server's API, never through the mount.

#1: a `.git/config` with `core.fsmonitor` (and hooks) uploaded by a repo's writer ran
on a reader's `git status` in the mount: every file showed as the mounting user's, so
git's ownership check passed. #2: an absolute symlink planted in the repo was followed
locally: `echo >> MNT/notes.txt` changed a file outside the mount.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repomount.vfs.trust import NOBODY
from support.mount import MountProc
from support.server import ServerProc

Mount = Callable[..., MountProc]


@pytest.fixture
def mount(server: ServerProc, tmp_path: Path) -> Iterator[Mount]:
    """`mount(repo, *extra_args)` -> a started mount of `repo`; all stopped at teardown."""
    made: list[MountProc] = []

    def make(repo: str, *extra_args: str) -> MountProc:
        n = len(made)
        m = MountProc(
            f"{server.url}/{repo}",
            tmp_path / f"mnt{n}",
            work_dir=tmp_path / f"work{n}",
            token=server.token,
            repo=repo,
            extra_args=extra_args,
        )
        made.append(m)
        m.start()
        return m

    yield make
    for m in made:
        m.stop()


def commit(server: ServerProc, repo: str, ops: list[dict[str, object]]) -> None:
    with server.client() as c:
        c.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()


def upload_tree(server: ServerProc, repo: str, root: Path) -> None:
    """Everything below `root` (files with their modes, empty directories) in one commit."""
    ops: list[dict[str, object]] = []
    for d, dirs, files in os.walk(root):
        rel = Path(d).relative_to(root)
        if not dirs and not files:
            ops.append({"op": "mkdir", "path": str(rel)})
        for name in files:
            p = Path(d) / name
            ops.append({
                "op": "write",
                "path": str(rel / name),
                "content_b64": base64.b64encode(p.read_bytes()).decode(),
                "mode": p.stat().st_mode & 0o777,
            })  # fmt: skip
    commit(server, repo, ops)


# ---------------------------------------------------------------------- #1: git


def git_env(tmp_path: Path) -> dict[str, str]:
    """A git that reads no config of this machine's. Without SUDO_UID: git as root
    compares owners with it instead of uid 0."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "SUDO_UID"}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    for who in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = "t", "t@example.com"
    return env


def git(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def plant_repo_with_code(server: ServerProc, tmp_path: Path, repo: str) -> tuple[Path, Path]:
    """A real repo whose config runs a command on `git status` (core.fsmonitor) and whose
    pre-commit hook runs one on `git commit`, uploaded through the API. Returns the
    marker files each would create."""
    ran_fsmonitor, ran_hook = tmp_path / "fsmonitor-ran", tmp_path / "hook-ran"
    env = git_env(tmp_path)
    src = tmp_path / f"{repo}-src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "a.txt"),
        ("commit", "-q", "-m", "one"),
        ("config", "core.fsmonitor", f"touch {ran_fsmonitor}; false"),
    ):
        assert git(env, src, *args).returncode == 0, args
    hook = src / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {ran_hook}\n")
    hook.chmod(0o755)
    server.create_repo(repo)
    upload_tree(server, repo, src)
    assert not ran_fsmonitor.exists() and not ran_hook.exists()
    return ran_fsmonitor, ran_hook


def test_git_config_and_hooks_from_the_remote_do_not_run(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    ran_fsmonitor, ran_hook = plant_repo_with_code(server, tmp_path, "planted")
    m = mount("planted")
    env = git_env(tmp_path)
    status = git(env, m.path, "status")
    assert not ran_fsmonitor.exists()
    assert status.returncode != 0 and "dubious ownership" in status.stderr, status
    committed = git(env, m.path, "commit", "--allow-empty", "-q", "-m", "two")
    assert not ran_hook.exists()
    assert committed.returncode != 0 and "dubious ownership" in committed.stderr, committed
    # Why: the remote's git metadata is nobody's; the work tree stays yours.
    gitdir = os.stat(m.path / ".git")
    assert (gitdir.st_uid, gitdir.st_gid) == (NOBODY, NOBODY)
    assert os.stat(m.path / ".git" / "hooks" / "pre-commit").st_uid == NOBODY
    assert os.stat(m.path / "a.txt").st_uid == os.getuid()
    # Reading it is fine: it is data.
    assert "\tfsmonitor = " in (m.path / ".git" / "config").read_text()


def test_trust_remote_code_lets_git_run_it_as_before(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    ran_fsmonitor, ran_hook = plant_repo_with_code(server, tmp_path, "mine")
    m = mount("mine", "--trust-remote-code")
    env = git_env(tmp_path)
    assert os.stat(m.path / ".git").st_uid == os.getuid()
    git(env, m.path, "status")  # (the hook's `false` makes git fall back to a full scan)
    assert ran_fsmonitor.exists()
    committed = git(env, m.path, "commit", "--allow-empty", "-q", "-m", "two")
    assert committed.returncode == 0, committed
    assert ran_hook.exists()
    assert git(env, m.path, "log", "--format=%s").stdout.split() == ["two", "one"]


def test_git_init_inside_the_mount_is_yours_for_the_session_only(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    """A `.git` made through the mount works as on a local disk, hooks included; after a
    remount it is the remote's (the mount cannot know who changed it meanwhile), until
    mounted with --trust-remote-code."""
    server.create_repo("local")
    m = mount("local")
    env = git_env(tmp_path)
    ran_hook = tmp_path / "own-hook-ran"
    assert git(env, m.path, "init", "-q", "-b", "main").returncode == 0
    hook = m.path / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {ran_hook}\n")
    hook.chmod(0o755)
    (m.path / "f.txt").write_text("f\n")
    assert git(env, m.path, "add", "f.txt").returncode == 0
    committed = git(env, m.path, "commit", "-q", "-m", "one")
    assert committed.returncode == 0, committed
    assert ran_hook.exists()
    assert m.unmount().returncode == 0

    m.start()  # the same state directory, as before
    status = git(env, m.path, "status")
    assert status.returncode != 0 and "dubious ownership" in status.stderr, status
    assert m.unmount().returncode == 0

    m.extra_args = [*m.extra_args, "--trust-remote-code"]
    m.start()
    status = git(env, m.path, "status", "--porcelain")
    assert status.returncode == 0 and status.stdout == "", status
    assert git(env, m.path, "log", "--format=%s").stdout.split() == ["one"]


def test_a_bare_repository_from_the_remote_does_not_run_its_config(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    """This stop's security probe: a directory the remote shaped like a bare repository
    (HEAD, objects/, refs/) under another name than .git ran its `core.pager` on
    `git branch` there, as the mounting user. git takes such a directory for a git
    directory, so the mount does too: it is nobody's, and git refuses it."""
    ran_pager = tmp_path / "pager-ran"
    env = git_env(tmp_path)
    top = tmp_path / "top"
    assert git(env, tmp_path, "init", "-q", "--bare", "-b", "main", str(top / "lib.git"))
    lib = top / "lib.git"
    assert git(env, lib, "config", "core.pager", f"touch {ran_pager}; cat").returncode == 0
    (top / "readme.txt").write_text("hi\n")
    server.create_repo("bare")
    upload_tree(server, "bare", top)
    m = mount("bare")
    shown = m.path / "lib.git"
    os.stat(shown)  # (a stat first, cached by the kernel: git must still see nobody)
    # (in a terminal: git pages only then)
    branch = subprocess.run(
        ["script", "-qc", "git branch -a", "/dev/null"],
        cwd=shown, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert not ran_pager.exists(), branch
    assert "dubious ownership" in branch.stdout + branch.stderr, branch
    assert (os.stat(shown).st_uid, os.stat(shown).st_gid) == (NOBODY, NOBODY)
    assert os.stat(m.path / "readme.txt").st_uid == os.getuid()

    trusting = mount("bare", "--trust-remote-code")
    os.listdir(trusting.path / "lib.git")
    assert os.stat(trusting.path / "lib.git").st_uid == os.getuid()


# ---------------------------------------------------------------------- #2: symlinks


def plant_links(server: ServerProc, repo: str, outside: Path) -> dict[str, str]:
    """Links that leave a mount at tmp_path/mntN for `outside` (tmp_path/outside.txt),
    and one that stays inside."""
    links = {
        "notes.txt": str(outside),  # absolute
        "sub/dir/up": "../../../outside.txt",  # climbs out
        "here": ".",
        "sneaky": "here/../outside.txt",  # inside as text; `here/..` is above the root
        "ok": "sub/real.txt",
    }
    server.create_repo(repo)
    ops: list[dict[str, object]] = [{"op": "write", "path": "sub/real.txt", "content_b64": ""}]
    ops += [{"op": "symlink", "path": p, "target": t} for p, t in links.items()]
    commit(server, repo, ops)
    return links


def append(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", 'echo pwned >> "$1"', "sh", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


ESCAPING = ("notes.txt", "sub/dir/up", "sneaky")


def test_remote_symlinks_out_of_the_mount_are_not_followed(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    links = plant_links(server, "links", outside)
    m = mount("links")
    for name in ESCAPING:
        p = m.path / name
        assert (p.parent / links[name]).resolve() == outside  # (what following would do)
        wrote = append(p)
        assert wrote.returncode != 0 and "Permission denied" in wrote.stderr, (name, wrote)
        assert outside.read_text() == "outside\n", name
        # What reads see: a read-only regular file holding the link's target.
        st = os.lstat(p)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, name
        assert p.read_text() == links[name]
    # A link that stays inside is a link, followed for writes too.
    assert os.path.islink(m.path / "ok")
    assert append(m.path / "ok").returncode == 0
    assert (m.path / "sub" / "real.txt").read_text() == "pwned\n"
    # A link you make yourself is followed (for this session).
    os.symlink(outside, m.path / "mine")
    assert append(m.path / "mine").returncode == 0
    assert outside.read_text() == "outside\npwned\n"


def test_a_remote_link_moved_out_of_reach_is_not_followed(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    """`a/b/c/d -> ../../..` stays inside the mount; after `mv a/b b` the kernel followed
    it out: `echo > b/c/d/OUTSIDE.txt` wrote beside the mount (the security probe)."""
    server.create_repo("moved")
    commit(server, "moved", [{"op": "symlink", "path": "a/b/c/d", "target": "../../.."}])
    m = mount("moved")
    assert os.path.islink(m.path / "a" / "b" / "c" / "d")
    subprocess.run(["mv", str(m.path / "a" / "b"), str(m.path / "b")], check=True, timeout=30)
    wrote = append(m.path / "b" / "c" / "d" / "OUTSIDE.txt")
    assert wrote.returncode != 0, wrote
    with pytest.raises(NotADirectoryError):
        open(m.path / "b" / "c" / "d" / "OUTSIDE.txt", "a").close()
    assert not (tmp_path / "OUTSIDE.txt").exists()
    st = os.lstat(m.path / "b" / "c" / "d")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    assert (m.path / "b" / "c" / "d").read_text() == "../../.."
    m.sync()
    with server.client() as c:
        r = c.get("/v1/repos/moved/tree", params={"recursive": 1})
        entries = {e["path"]: e for e in r.json()["entries"]}
    assert entries["b/c/d"]["type"] == "symlink" and entries["b/c/d"]["target"] == "../../.."


def test_follow_remote_symlinks_follows_them(
    server: ServerProc, mount: Mount, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    links = plant_links(server, "followed", outside)
    m = mount("followed", "--follow-remote-symlinks")
    for n, name in enumerate(ESCAPING, 1):
        assert os.readlink(m.path / name) == links[name]
        assert append(m.path / name).returncode == 0
        assert outside.read_text() == "outside\n" + "pwned\n" * n
