"""The mount commands as a user runs them: daemon, unmount, errors, signals, the demo."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.mount import force_unmount, is_mounted, repomount
from support.server import ServerProc

ROOT = Path(__file__).resolve().parents[2]


def _env(token: str | None, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xc"), "XDG_STATE_HOME": str(tmp / "xs")}
    env.pop("REPOMOUNT_TOKEN", None)
    if token is not None:
        env["REPOMOUNT_TOKEN"] = token
    return env


def test_daemon_mount_then_unmount(server: ServerProc, tmp_path: Path) -> None:
    server.create_repo("d")
    server.put("d", "a.txt", b"A")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server.token, tmp_path)
    try:
        r = repomount("mount", f"{server.url}/d", str(mnt), env=env, timeout=30)
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
        assert server.tree("d") == {"a.txt": b"A", "b.txt": b"B"}
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
}


@pytest.mark.parametrize("case", list(MOUNT_ERRORS))
def test_mount_errors_are_one_clear_line(server: ServerProc, tmp_path: Path, case: str) -> None:
    server.create_repo("ok")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src, token = f"{server.url}/ok", server.token
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
    try:
        r = repomount("mount", src, str(mnt), env=_env(token, tmp_path), timeout=60)
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
    from repomount.remotes import registry, relace, terminaluse

    names = [registry.TOKEN_ENV, stalls.ENV, "XDG_CACHE_HOME", "XDG_STATE_HOME"]
    names += ["XDG_RUNTIME_DIR", relace.DEFAULT_URL, terminaluse.DEFAULT_URL]
    for source in (relace.SOURCE, terminaluse.SOURCE):
        names += [source.key_env, source.url_env]
    for command in ((), ("mount",)):
        shown = repomount(*command, "--help").stdout
        assert [n for n in names if n not in shown] == [], command
    for command in ("sync", "status", "unmount"):
        assert "XDG_RUNTIME_DIR" in repomount(command, "--help").stdout
    assert registry.TOKEN_ENV in repomount("serve", "--help").stdout


def test_drain_timeout_defaults_agree_with_the_readme() -> None:
    """Issue 16 #7: `unmount --drain-timeout` defaulted to 120 s, the README said 60."""
    from repomount.cli import build_parser

    readme = re.search(r"\| `--drain-timeout S` \| (\d+) \|", (ROOT / "README.md").read_text())
    assert readme is not None
    commands = _subcommands(build_parser())
    for name in ("mount", "unmount"):
        assert commands[name].get_default("drain_timeout") == float(readme[1]), name
        assert f"(default {readme[1]})" in " ".join(repomount(name, "--help").stdout.split())
