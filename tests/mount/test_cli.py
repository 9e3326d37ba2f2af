"""The mount commands as a user runs them: daemon, unmount, errors, signals, the demo."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.mount import MountProc, force_unmount, is_mounted, repomount
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc
from support.util import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _env(token: str | None, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xc"), "XDG_STATE_HOME": str(tmp / "xs")}
    env.pop("REPOMOUNT_TOKEN", None)
    if token is not None:
        env["REPOMOUNT_TOKEN"] = token
    return env


def test_daemon_mount_then_unmount(server: ServerProc, tmp_path: Path) -> None:
    repo = fresh_repo_name("d")
    server.create_repo(repo)
    server.put(repo, "a.txt", b"A")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server.token, tmp_path)
    try:
        r = repomount("mount", f"{server.url}/{repo}", str(mnt), env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        assert (mnt / "a.txt").read_bytes() == b"A"
        (mnt / "b.txt").write_bytes(b"B")
        st = repomount("status", str(mnt), "--json", env=env)
        assert st.returncode == 0 and '"online": true' in st.stdout
        s = repomount("sync", str(mnt), env=env)
        assert s.returncode == 0, s.stderr
        u = repomount("unmount", str(mnt), env=env)
        assert u.returncode == 0, u.stderr
        assert not is_mounted(mnt)
        assert server.tree(repo) == {"a.txt": b"A", "b.txt": b"B"}
    finally:
        force_unmount(mnt)


# What each failed mount says (issue 16 #7: a refused token or an unknown repo is not
# "cannot reach the remote").
MOUNT_ERRORS = {
    "not_empty": "is not empty",
    "unreachable": "cannot reach",
    "bad_token": "the token was refused by http://127.0.0.1:",
    "no_token": "requires a token: set REPOMOUNT_TOKEN",
    "unknown_repo": "no repo 'nope' on http://127.0.0.1:",
    "bad_src": "unsupported remote",
    "missing_dir": "does not exist",
    "no_runtime_dir": "XDG_RUNTIME_DIR=",  # (was a traceback)
}


def test_a_second_mount_with_the_state_dir_of_a_running_one_is_refused_in_its_own_words(
    server: ServerProc, tmp_path: Path
) -> None:
    """One mount per state directory; the second is refused before it starts, so its
    refusal does not go into the running mount's log (it did)."""
    repo = fresh_repo_name("twice")
    server.create_repo(repo)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    env = _env(server.token, tmp_path)
    src = f"{server.url}/{repo}"
    assert repomount("mount", src, str(first), env=env).returncode == 0
    try:
        [log] = (tmp_path / "xs").rglob("mount.log")
        before = log.read_text()
        r = repomount("mount", src, str(second), env=env, timeout=60)
        assert r.returncode == 1
        [line] = r.stderr.strip().splitlines()
        assert "is already mounted with state dir" in line, line
        assert not is_mounted(second)
        assert log.read_text() == before
    finally:
        repomount("unmount", str(first), env=env)
        force_unmount(second)


def test_an_unknown_fuse_option_is_named_in_the_one_line(
    server: ServerProc, tmp_path: Path
) -> None:
    """libfuse says which option it does not know on stderr, which a mount in the
    background sends to its log: the terminal had only 'fuse_session_new() failed'."""
    repo = fresh_repo_name("opt")
    server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = repomount(
            "mount", f"{server.url}/{repo}", str(mnt), "-o", "no_such_option",
            env=_env(server.token, tmp_path), timeout=60,
        )  # fmt: skip
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "-o options (no_such_option)" in lines[0], r.stderr
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


@pytest.mark.parametrize("case", ["bad_token", "unknown_repo", "unreachable"])
def test_a_mount_that_never_came_up_leaves_only_its_log(
    server: ServerProc, tmp_path: Path, case: str
) -> None:
    """Bad input changes nothing: a first mount refused by the remote left a state
    directory (a journal, a 1 MiB reserve, a spool) and a cache directory behind. Only
    the log saying why stays; a state directory used before is left as it was."""
    repo = fresh_repo_name("gone")
    server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src, token = f"{server.url}/{repo}", server.token
    if case == "bad_token":
        token = "wrong-token"
    elif case == "unknown_repo":
        src = f"{server.url}/nope"
    else:
        src = "http://127.0.0.1:9/ok"
    env = _env(token, tmp_path)
    try:
        r = repomount("mount", src, str(mnt), env=env, timeout=60)
        assert r.returncode != 0
        made = [p for p in tmp_path.rglob("*") if not p.is_relative_to(mnt)]
        files = [p.relative_to(tmp_path) for p in made if not p.is_dir()]
        assert [f.name for f in files] == ["mount.log"], made
        assert "not mounted" in (tmp_path / files[0]).read_text()
        assert not (tmp_path / "xc").exists(), made  # (the cache root was made for it)
    finally:
        force_unmount(mnt)
    # A state directory in use before (a pending change, kept modes) stays as it was.
    good = _env(server.token, tmp_path)
    assert repomount("mount", f"{server.url}/{repo}", str(mnt), env=good).returncode == 0
    try:
        (mnt / "kept.txt").write_bytes(b"kept\n")
    finally:
        assert repomount("unmount", str(mnt), env=good).returncode == 0
    before = sorted(map(str, (tmp_path / "xs").rglob("*")))
    r = repomount("mount", f"{server.url}/{repo}", str(mnt), env=_env("wrong", tmp_path))
    assert r.returncode != 0
    force_unmount(mnt)
    assert sorted(map(str, (tmp_path / "xs").rglob("*"))) == before


@pytest.mark.parametrize("case", list(MOUNT_ERRORS))
def test_mount_errors_are_one_clear_line(server: ServerProc, tmp_path: Path, case: str) -> None:
    repo = fresh_repo_name("ok")
    server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src, token = f"{server.url}/{repo}", server.token
    if case == "not_empty":
        (mnt / "file").write_text("x")
    elif case == "unreachable":
        src = "http://127.0.0.1:9/ok"
    elif case == "bad_token":
        token = "wrong-token"
    elif case == "no_token":
        token = None
    elif case == "unknown_repo":
        src = f"{server.url}/nope"
    elif case == "bad_src":
        src = "ftp://example/x"
    elif case == "missing_dir":
        mnt = tmp_path / "does-not-exist"
    env = _env(token, tmp_path)
    if case == "no_runtime_dir":
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "no-such-run")
    try:
        r = repomount("mount", src, str(mnt), env=env, timeout=60)
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("repomount: ")
        assert MOUNT_ERRORS[case] in lines[0], lines[0]
        if case != "unreachable":
            assert "cannot reach" not in lines[0]
        assert "wrong-token" not in r.stderr and server.token not in r.stderr
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


@pytest.mark.parametrize("value", ["4294967295", "4294967296", "99999999999999999999"])
@pytest.mark.parametrize("flag", ["--uid", "--gid"])
def test_an_owner_no_file_can_show_is_refused(tmp_path: Path, flag: str, value: str) -> None:
    """uid_t is 32 bits and (uid_t)-1 is no owner: such an --uid was mounted, every
    lookup then failed (OverflowError in the daemon) and the mount said only "was
    mounted but does not answer"."""
    r = repomount(
        "mount", flag, value, "http://127.0.0.1:9/r", str(tmp_path), env=_env(None, tmp_path)
    )
    assert r.returncode == 2, r
    assert r.stderr.splitlines()[-1].endswith(f"{value!r}: ids go from 0 to 4294967294")
    assert not (tmp_path / "xs").exists() and not (tmp_path / "xc").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e308"])
@pytest.mark.parametrize(
    ("command", "flag"),
    [("sync", "--timeout"), ("unmount", "--drain-timeout"), ("demo", "--drain-timeout")],
)
def test_a_wait_that_is_no_number_of_seconds_is_refused(
    tmp_path: Path, command: str, flag: str, value: str
) -> None:
    """NaN, inf and 1e308 were tracebacks from settimeout (`unmount` then unmounted
    without its drain and said the daemon was not running); -1 was a wait of 0."""
    not_a_mount = tmp_path / "file"
    not_a_mount.write_text("x")
    r = repomount(command, str(not_a_mount), f"{flag}={value}", env=_env(None, tmp_path))
    assert r.returncode == 2, r
    last = r.stderr.splitlines()[-1]
    assert last.startswith(f"repomount {command}: error: argument {flag}: "), r.stderr
    assert "Traceback" not in r.stderr


def _mounts_at(path: Path) -> int:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == real)


def test_two_mounts_started_at_once_on_one_directory_do_not_stack(
    server: ServerProc, tmp_path: Path
) -> None:
    """Both passed the mountpoint check before either had mounted, FUSE stacked the
    second over the first, and the first lost its control socket: `status` could not
    reach it and `unmount` said its daemon was not running."""
    repos = [fresh_repo_name("race") for _ in range(2)]
    for repo in repos:
        server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server.token, tmp_path)
    try:
        for _ in range(4):  # (a race: before, most rounds stacked two mounts)
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "repomount",
                        "mount",
                        f"{server.url}/{repo}",
                        str(mnt),
                        "--state-dir",
                        str(tmp_path / f"s{i}"),
                        "--cache-dir",
                        str(tmp_path / f"c{i}"),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i, repo in enumerate(repos)
            ]
            codes = sorted(p.wait(60) for p in procs)
            said = "".join(p.stderr.read() for p in procs if p.stderr is not None)
            assert codes[0] == 0 and codes[1] != 0, said
            assert _mounts_at(mnt) == 1
            assert repomount("status", str(mnt), env=env).returncode == 0
            u = repomount("unmount", str(mnt), env=env)
            assert u.returncode == 0 and "not running" not in u.stdout + u.stderr, u
            assert _mounts_at(mnt) == 0
    finally:
        while is_mounted(mnt):
            force_unmount(mnt)


@pytest.mark.parametrize("flag", ["--state-dir", "--cache-dir"])
def test_a_state_or_cache_dir_inside_the_mountpoint_is_refused(
    server: ServerProc, tmp_path: Path, flag: str
) -> None:
    """The mount hung as it started (its journal went through the mount itself, which
    waited for it) and SIGTERM could not stop it."""
    repo = fresh_repo_name("inside")
    server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server.token, tmp_path)
    try:
        r = repomount(
            "mount", f"{server.url}/{repo}", str(mnt), flag, str(mnt / "d"), env=env, timeout=30
        )
        assert r.returncode == 2, r
        [line] = r.stderr.splitlines()
        assert "is inside the mountpoint" in line and f"choose another with {flag}" in line
        assert not is_mounted(mnt) and list(mnt.iterdir()) == []
    finally:
        force_unmount(mnt)


def test_sigterm_unmounts_cleanly(server: ServerProc, mount_factory) -> None:
    m = mount_factory()
    (m.path / "x").write_bytes(b"x")
    assert m.proc is not None
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(30) == 0
    assert not is_mounted(m.path)
    assert server.tree(m.repo) == {"x": b"x"}


def test_unmount_of_something_not_mounted_fails(tmp_path: Path) -> None:
    r = repomount("unmount", str(tmp_path), env=_env(None, tmp_path))
    assert r.returncode != 0 and "not mounted" in r.stderr


def test_readme_demo_command(tmp_path: Path) -> None:
    """The README's first command (scripts/demo): sets up, mounts the demo, Ctrl-C ends."""
    mnt = tmp_path / "demo-mnt"
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "demo"), str(mnt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        seen = []
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            seen.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        assert is_mounted(mnt), "".join(seen)
        assert "hello from a mounted repo" in (mnt / "src" / "hello.py").read_text()
        (mnt / "new.txt").write_text("from the test\n")
        assert (mnt / "new.txt").read_text() == "from the test\n"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(seen) + rest
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        force_unmount(mnt)


@pytest.mark.parametrize("case", ["mountpoint_under_a_file", "dir_is_a_file"])
def test_demo_paths_it_cannot_use_are_one_line_and_leave_nothing(tmp_path: Path, case: str) -> None:
    """Both were tracebacks; the second also left the mountpoint it had made, parents
    and all."""
    file = tmp_path / "file"
    file.write_text("x")
    if case == "mountpoint_under_a_file":
        args = [str(file / "mnt")]
    else:
        args = [str(tmp_path / "new" / "mnt"), "--dir", str(file)]
    r = repomount("demo", *args, env=_env(None, tmp_path), timeout=30)
    assert r.returncode == 2, r
    [line] = r.stderr.splitlines()
    assert line.startswith("repomount: ") and "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_demo_dir_inside_its_mountpoint_is_refused(tmp_path: Path) -> None:
    r = repomount("demo", str(tmp_path / "m"), "--dir", str(tmp_path / "m" / "w"), timeout=30)
    assert r.returncode == 2, r
    assert r.stderr.splitlines() == [
        f"repomount: --dir {tmp_path / 'm' / 'w'} is inside the mountpoint {tmp_path / 'm'}"
    ]
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_entry_point() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "repomount", "--help"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0 and "mount" in r.stdout


# --------------------------------------------------------------------------- help


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    """Every (sub)command's parser by its full name: "mount", "repo create"."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_subcommands(sub, f"{prefix}{name} "))
    return found


def test_every_option_has_help() -> None:
    """Issue 16 #7: --log-level, sync --timeout, status --json, serve --host/--port and
    the mountpoints had none. (`serve --token` is hidden on purpose: it is refused.)"""
    from repomount.cli import build_parser

    missing = []
    for name, sub in _subcommands(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS and (name, action.dest) == ("serve", "token"):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_names_every_environment_variable() -> None:
    """Issue 16 #7: `mount --help` names the token and every service's key and URL
    variable (the names the code reads), the directories' variables and the debug one."""
    from repomount import stalls
    from repomount.remotes import registry, relace, sentry, sentry_source, terminaluse

    names = [registry.TOKEN_ENV, stalls.ENV, "XDG_CACHE_HOME", "XDG_STATE_HOME"]
    names += ["XDG_RUNTIME_DIR", relace.DEFAULT_URL, terminaluse.DEFAULT_URL]
    names += [sentry.TOKEN_ENV, sentry_source.URL_ENV, sentry.DEFAULT_URL]
    for source in (relace.SOURCE, terminaluse.SOURCE):
        names += [source.key_env, source.url_env]
    names += ["OXEN_API_KEY", "OXEN_API_URL", "OXEN_HOST", "OXEN_AUTHOR_NAME", "OXEN_AUTHOR_EMAIL"]
    for command in ((), ("mount",)):
        shown = repomount(*command, "--help").stdout
        assert [n for n in names if n not in shown] == [], command
    for command in ("sync", "status", "unmount"):
        assert "XDG_RUNTIME_DIR" in repomount(command, "--help").stdout
    assert registry.TOKEN_ENV in repomount("serve", "--help").stdout


def test_mount_description_names_every_services_key() -> None:
    """A walkthrough: `mount --help`'s description named REPOMOUNT_TOKEN, RELACE_API_KEY
    and TERMINALUSE_API_KEY only (the list below it has them all)."""
    from repomount.cli import build_parser
    from repomount.remotes import registry, relace, sentry, terminaluse

    keys = [registry.TOKEN_ENV, relace.KEY_ENV, terminaluse.SOURCE.key_env, "OXEN_API_KEY"]
    keys.append(sentry.TOKEN_ENV)
    description = _subcommands(build_parser())["mount"].description
    assert [k for k in keys if k not in description] == []


def test_drain_timeout_defaults_agree_with_the_readme() -> None:
    """Issue 16 #7: `unmount --drain-timeout` defaulted to 120 s, the README said 60."""
    from repomount.cli import build_parser

    readme = re.search(r"\| `--drain-timeout S` \| (\d+) \|", (ROOT / "README.md").read_text())
    assert readme is not None
    commands = _subcommands(build_parser())
    for name in ("mount", "unmount"):
        assert commands[name].get_default("drain_timeout") == float(readme[1]), name
        assert f"(default {readme[1]})" in " ".join(repomount(name, "--help").stdout.split())


# --------------------------------------------------------------------------- status, sync

HOLD = ["--flush-delay", "60", "--max-flush-window", "120"]  # changes stay pending


def _status(m: MountProc) -> dict[str, Any]:
    r = repomount("status", str(m.path), "--json", env=m.env)
    assert r.returncode == 0, r.stderr
    status: dict[str, Any] = json.loads(r.stdout)
    return status


def _status_text(m: MountProc) -> str:
    r = repomount("status", str(m.path), env=m.env)
    assert r.returncode == 0, r.stderr
    assert "{'" not in r.stdout and "None" not in r.stdout, r.stdout  # no Python reprs
    return r.stdout


def test_status_counts_changes_per_file_and_lists_a_few(mount_factory) -> None:
    """Issue 16 #5: one `echo` was `pending: 2` (its create and its content), and every
    journal row was a line of its own: 631 lines after a `cp -r`."""
    m = mount_factory(extra_args=HOLD)
    _sh("echo hello > hello.txt", m.path)
    status = _status(m)
    assert status["pending_changes"] == 1 and status["pending_bytes"] == 6
    [entry] = status["pending"]
    assert entry["op"] == "write" and entry["path"] == "hello.txt" and entry["bytes"] == 6
    assert status["pending_rows"] == 2  # what was counted: the shell's create, then echo
    assert "pending:    1 change (1 file written), 6 B to upload" in _status_text(m)

    (m.path / "tree").mkdir()
    for i in range(30):
        (m.path / "tree" / f"f{i:02}").write_bytes(b"x" * i)
    status = _status(m)
    assert status["pending_changes"] == 32  # hello.txt, the directory, 30 files
    assert status["pending_by_op"] == {"write": 31, "mkdir": 1}
    assert status["pending_bytes"] == 6 + sum(range(30))
    assert len(status["pending"]) == 32  # --json lists every one, oldest first
    assert [e["path"] for e in status["pending"][:3]] == ["hello.txt", "tree", "tree/f00"]
    text = _status_text(m)
    listed = [ln for ln in text.splitlines() if ln.startswith("  write ") or "  mkdir " in ln]
    assert len(listed) == 10, text
    assert "  ... and 22 more" in text


def test_status_says_online_or_offline_since_when_and_only_a_current_error(
    server: ServerProc, mount_factory
) -> None:
    """Issue 16 #5: `last_error` stayed after the server was back."""
    m = mount_factory()
    started = _status(m)
    assert started["online"] is True and started["online_since"] is not None
    assert started["last_error"] is None and started["offline_since"] is None
    assert os.listdir(m.path) == []  # listed while online: a create offline needs that
    server.stop()
    (m.path / "offline.txt").write_bytes(b"written offline")
    offline = wait_until(
        lambda: (s := _status(m))["online"] is False and s, 30, "the mount to see it offline"
    )
    assert offline["last_error"] and offline["last_error_at"] >= offline["offline_since"]
    assert offline["online_since"] is None and offline["pending_changes"] == 1
    text = _status_text(m)
    assert "connection: offline (since " in text and "last error: none" not in text
    server.start()
    m.sync()
    back = _status(m)
    assert back["online"] is True and back["online_since"] >= offline["offline_since"]
    assert back["last_error"] is None and back["last_error_at"] is None
    assert back["pending_changes"] == 0 and back["pending"] == []
    text = _status_text(m)
    assert "last error: none" in text and "connection: online (since " in text
    assert "pending:    none: everything is uploaded" in text


def test_status_names_conflict_copies(server: ServerProc, mount_factory) -> None:
    """Issue 16 #5: a conflict is listed with the name its local version went to."""
    m = mount_factory(extra_args=HOLD)
    (m.path / "doc.txt").write_bytes(b"mine")
    server.put(m.repo, "doc.txt", b"theirs")  # before ours goes out
    m.sync()
    [conflict] = _status(m)["conflicts"]
    assert conflict["path"] == "doc.txt" and conflict["policy"] == "keep-both"
    assert conflict["copy"].startswith("doc.conflict-") and conflict["copy"].endswith(".txt")
    assert server.tree(m.repo)[conflict["copy"]] == b"mine"
    text = _status_text(m)
    assert "conflicts:  1" in text and f"local version kept as {conflict['copy']}" in text


def test_sync_names_the_conflicts_since_the_last_sync(server: ServerProc, mount_factory) -> None:
    """A WAN probe: `repomount sync` said "everything is uploaded" after a keep-both
    conflict, and nothing more. It is uploaded (as a copy), and sync says where, once."""
    m = mount_factory(extra_args=HOLD)
    (m.path / "doc.txt").write_bytes(b"mine")
    server.put(m.repo, "doc.txt", b"theirs")  # before ours goes out
    first = repomount("sync", str(m.path), env=m.env)
    assert first.returncode == 0 and "everything is uploaded" in first.stdout
    [line] = [x for x in first.stderr.splitlines() if "conflict" in x]
    assert "doc.txt changed on the remote: local version kept as doc.conflict-" in line
    again = repomount("sync", str(m.path), env=m.env)
    assert again.returncode == 0 and "conflict" not in again.stderr  # (told once)


def test_replay_counts_changes_not_journal_rows(mount_factory) -> None:
    """Issue 16 #5: the log said "replaying 22 change(s)" for 11 files."""
    m = mount_factory(extra_args=HOLD)
    _sh("for f in a b c; do echo $f > $f; done", m.path)
    assert _status(m)["pending_rows"] == 6  # each file: its create, then its content
    m.kill()  # nothing was sent: the next mount replays the journal
    m.start()
    assert "replaying 3 change(s) from an earlier run" in m.log()
    assert sorted(os.listdir(m.path)) == ["a", "b", "c"]


def test_a_stop_counts_changes_not_journal_rows(server: ServerProc, mount_factory) -> None:
    """A walkthrough: a SIGTERM with the remote away logged "sending 4 change(s)" and
    "stopped with 4 change(s) not sent ...: new1.txt, new1.txt, new2.txt, new2.txt"
    where `status` said 2 changes."""
    m = mount_factory(extra_args=[*HOLD, "--drain-timeout", "2"])
    _sh("echo a > new1.txt; echo b > new2.txt", m.path)
    status = _status(m)
    assert (status["pending_rows"], status["pending_changes"]) == (4, 2)
    server.stop()
    assert m.stop() == 1
    log = m.log()
    assert "stopping: sending 2 changes (new1.txt, new2.txt), for at most 2 s" in log
    assert "stopped with 2 changes (new1.txt, new2.txt) not sent" in log
    server.start()
    m.start()
    assert "replaying 2 change(s) from an earlier run" in m.log()
    assert server.tree(m.repo) == {"new1.txt": b"a\n", "new2.txt": b"b\n"}


def test_unmount_against_a_remote_that_never_answers(server: ServerProc, mount_factory) -> None:
    """A walkthrough: an unmount timing out against a server that takes connections but
    never answers said "(unknown error)", and the mount log had two drain lines for its
    one stop ("not uploaded within 3s", then "within 0s")."""
    m = mount_factory(extra_args=HOLD)
    (m.path / "late.txt").write_bytes(b"late")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)  # connections still accepted, never answered
    try:
        r = repomount("unmount", str(m.path), "--drain-timeout", "2", env=m.env)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert r.returncode == 1 and not is_mounted(m.path)
    assert (
        "but 1 change (late.txt) could not be uploaded (the remote answered nothing "
        "within the drain timeout (2 s)); they are kept in the journal" in r.stderr
    ), r.stderr
    assert m.proc is not None and m.proc.wait(30) == 1
    log = m.log()
    assert len([x for x in log.splitlines() if "drain:" in x]) == 1, log
    assert "stopping without waiting again: 1 change (late.txt) left in the journal" in log


def test_unmount_says_how_to_settle_a_conflict_held_by_fail(
    server: ServerProc, mount_factory
) -> None:
    """A walkthrough: under --on-conflict fail, unmount said the held change would "go
    out at the next mount"; every mount holds it again. Another policy settles it."""
    m = mount_factory(extra_args=[*HOLD, "--on-conflict", "fail"])
    server.put(m.repo, "doc.txt", b"base\n")
    assert (m.path / "doc.txt").read_bytes() == b"base\n"
    (m.path / "doc.txt").write_bytes(b"mine\n")
    server.put(m.repo, "doc.txt", b"theirs\n")  # before ours goes out
    r = repomount("unmount", str(m.path), "--drain-timeout", "5", env=m.env)
    assert r.returncode == 1
    assert "doc.txt lost a conflict and is held under --on-conflict fail" in r.stderr
    assert "mount again with --on-conflict keep-both" in r.stderr
    assert "go out at the next mount" not in r.stderr
    assert m.proc is not None and m.proc.wait(30) == 1
    again = MountProc(
        m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo,
        extra_args=["--on-conflict", "keep-both"],
    )  # fmt: skip
    again.start()  # its replay settles the change: a copy beside the remote's version
    try:
        tree = server.tree(m.repo)
        assert tree.pop("doc.txt") == b"theirs\n"
        [(copy, mine)] = tree.items()
        assert copy.startswith("doc.conflict-") and mine == b"mine\n"
    finally:
        again.stop()


def _sh(script: str, cwd: Path) -> None:
    """A shell command, as a user types it (a shell's `>` closes a descriptor of the new
    file before `echo` writes: that is one journal row more)."""
    subprocess.run(["sh", "-c", script], cwd=cwd, check=True)


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `repomount ARGS` with stdout and stderr on a pseudo-terminal; its exit code
    and everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "repomount", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(30), out.decode(errors="replace")


def test_sync_shows_progress_on_a_terminal_only(server: ServerProc, mount_factory) -> None:
    """Issue 16 #5: `sync` showed nothing while it waited."""
    m = mount_factory()
    assert os.listdir(m.path) == []  # listed while online: a create offline needs that
    server.stop()
    (m.path / "waiting.txt").write_bytes(b"12345")
    # The flusher's first try finds the server gone; on a busy machine that can take
    # longer than the sync's 3 s, whose lines would then all say "uploading".
    wait_until(lambda: not _status(m)["online"], 30, "the mount to see the server gone")
    args = ["sync", str(m.path), "--timeout", "3"]
    code, shown = _on_a_terminal(args, m.env)
    assert code == 1
    assert "\rrepomount: waiting for the remote (offline since " in shown, shown
    assert "1 change, 5 B left" in shown
    assert "not everything is uploaded: 1 change (1 file written), 5 B" in shown
    assert "  write   waiting.txt  (5 B, " in shown
    piped = repomount(*args, env=m.env)  # not a terminal: no progress line
    assert piped.returncode == 1 and "\r" not in piped.stderr and "left" not in piped.stderr
    assert "not everything is uploaded" in piped.stderr
    server.start()
    code, shown = _on_a_terminal(["sync", str(m.path)], m.env)
    assert code == 0 and "everything is uploaded" in shown
    assert server.tree(m.repo) == {"waiting.txt": b"12345"}


def test_an_unmount_refused_as_busy_names_what_holds_the_mount(
    server: ServerProc, tmp_path: Path
) -> None:
    """`Device or resource busy` alone left the user to find the shell or editor
    inside the mount; the refusal names it (as `fuser -m` would)."""
    repo = fresh_repo_name("busy")
    server.create_repo(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server.token, tmp_path)
    assert repomount("mount", f"{server.url}/{repo}", str(mnt), env=env).returncode == 0
    holder = subprocess.Popen(["sleep", "60"], cwd=mnt)
    try:
        r = repomount("unmount", str(mnt), env=env)
        assert r.returncode == 1
        assert f"in use by sleep (pid {holder.pid})" in r.stderr, r.stderr
        assert is_mounted(mnt)
    finally:
        holder.kill()
        holder.wait()
        assert repomount("unmount", str(mnt), env=env).returncode == 0
        force_unmount(mnt)
