"""Issue 15, the config file: every mount needed a long command line with its token in
the environment, and nothing could name a remote for fstab or systemd.

Now `$XDG_CONFIG_HOME/repomount/config.toml` (or `--config PATH`) names remotes, each
with its src, token, mountpoint and any mount option; `repomount mount NAME: [MNT]`
mounts one, command-line options winning; `repomount config check` prints what a mount
would use with tokens redacted; and a file group members or other users may read or
change is refused with one line (like ssh with a key), whatever it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repomount import configfile
from repomount.options import Policy
from support.mount import force_unmount, is_mounted, repomount
from support.server import ServerProc
from support.util import wait_until

SECRET = "s3cret-token-never-shown"


def _write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _env(tmp: Path) -> dict[str, str]:
    """No token in the environment: only the config file has one."""
    env = {k: v for k, v in os.environ.items() if k not in ("REPOMOUNT_TOKEN", "RELACE_API_KEY")}
    return {
        **env,
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_CACHE_HOME": str(tmp / "xc"),
        "XDG_STATE_HOME": str(tmp / "xs"),
    }


# --------------------------------------------------------------------------- reading


def test_a_remote_table_becomes_options(tmp_path: Path) -> None:
    cfg = configfile.parse(
        """
        [remote.work]
        src = "relace:abc"
        token = "tok-123"
        mountpoint = "~/work"
        on-conflict = "fail"
        cache_size = "2G"
        flush-delay = 1
        local-only = ["*.tmp", "*.bak"]
        no-change-feed = true
        """,
        tmp_path / "config.toml",
    )
    work = cfg.remote("work")
    assert (work.src, work.token) == ("relace:abc", "tok-123")
    assert work.mountpoint == Path.home() / "work"
    assert work.options == {
        "on_conflict": Policy.FAIL,
        "cache_size": 2 << 30,
        "flush_delay": 1.0,
        "local_only": ("*.tmp", "*.bak"),
        "no_change_feed": True,
    }
    assert "tok-123" not in repr(work)  # the token stays out of reprs (and logs)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[remote.w]\nsrc = "relace:x"\nflush-dely = 1', "unknown key 'flush-dely'"),
        ('[remote.w]\nsrc = "relace:x"\ncache-size = "lots"', "cache-size: not a size"),
        ('[remote.w]\nsrc = "relace:x"\non-conflict = "maybe"', "is not one of keep-both"),
        ('[remote.w]\nsrc = "relace:x"\ntrust-remote-code = "yes"', "must be true or false"),
        ('[remote.w]\nsrc = "relace:x"\nmountpoint = "rel/dir"', "must be an absolute path"),
        ('[remote.w]\ntoken = "x"', 'needs src = "..."'),
        ('[remote."bad name"]\nsrc = "relace:x"', "bad remote name 'bad name'"),
        ('[remotes.w]\nsrc = "relace:x"', "unknown table or key 'remotes'"),
        ("[remote.w\n", "not valid TOML"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(configfile.ConfigError) as e:
        configfile.parse(text, path)
    message = str(e.value)
    assert says in message and str(path) in message and "\n" not in message


def test_named_remote_syntax() -> None:
    assert configfile.remote_name("work:") == "work"
    assert configfile.remote_name("relace:abc") is None
    assert configfile.remote_name("http://h/r") is None
    assert configfile.remote_name("bad name:") is None


# --------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_config_others_may_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write_config(
        tmp_path / "config" / "repomount" / "config.toml",
        f'[remote.work]\nsrc = "http://127.0.0.1:9/r"\ntoken = "{SECRET}"\n',
        mode,
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args in (("config", "check"), ("mount", "work:", str(mnt))):
        r = repomount(*args, env=_env(tmp_path))
        assert r.returncode == 2, r
        [line] = r.stderr.strip().splitlines()
        assert line.startswith(f"repomount: refusing the config file {path}:"), line
        assert f"mode {mode:04o}" in line and f"chmod 600 {path}" in line
        assert SECRET not in r.stdout + r.stderr
    assert not is_mounted(mnt)


def test_an_explicit_config_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    r = repomount("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "no config file" in r.stderr


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_config_that_is_not_a_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """A directory was a traceback (EISDIR from fdopen), a FIFO a wait for ever."""
    path = tmp_path / "config.toml"
    if kind == "directory":
        path.mkdir(mode=0o700)
    else:
        os.mkfifo(path, 0o600)
    for args in (("config", "check"), ("mount", "work:", str(tmp_path))):
        r = repomount(*args, "--config", str(path), timeout=20)
        assert r.returncode == 2, r
        assert r.stderr == f"repomount: refusing the config file {path}: not a regular file\n"


# --------------------------------------------------------------------------- check


def test_config_check_prints_what_a_mount_uses_without_the_token(tmp_path: Path) -> None:
    _write_config(
        tmp_path / "config" / "repomount" / "config.toml",
        f'[remote.work]\nsrc = "http://127.0.0.1:8750/notes"\ntoken = "{SECRET}"\n'
        'mountpoint = "/srv/notes"\nflush-delay = 2\non-conflict = "fail"\n'
        '[remote.other]\nsrc = "relace:abc"\n[remote.open]\nsrc = "http://127.0.0.1:9/o"\n',
    )
    r = repomount("config", "check", "work:", "--on-conflict", "mine", env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert SECRET not in out and "set (not shown)" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert "http://127.0.0.1:8750/notes" in lines["src"]
    assert "/srv/notes" in lines["mountpoint"]
    assert lines["flush-delay"].split()[1:] == ["2", "(config", "file)"]
    assert lines["on-conflict"].split()[1:] == ["mine", "(command", "line)"]
    assert lines["drain-timeout"].split()[1:] == ["60", "(default)"]
    assert str(tmp_path / "xs" / "repomount") in lines["state"]
    assert "[remote.other]" not in out
    every = repomount("config", "check", env=_env(tmp_path))
    assert "[remote.open]" in every.stdout and "[remote.work]" in every.stdout
    assert "none: read from the environment" in every.stdout
    # a source that would not open (here: no key anywhere) is said, and exit 1
    assert every.returncode == 1 and "[remote.other]" in every.stdout
    assert "needs a Relace API key" in every.stdout


# --------------------------------------------------------------------------- a mount


def test_a_named_remote_mounts_with_its_token_and_options(
    server: ServerProc, tmp_path: Path
) -> None:
    """The file gives the token (none in the environment), the mountpoint and two
    options; the command line's --state-dir wins over the file's."""
    server.create_repo("named")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _write_config(
        tmp_path / "config" / "repomount" / "config.toml",
        f'[remote.work]\nsrc = "{server.url}/named"\ntoken = "{server.token}"\n'
        f'mountpoint = "{mnt}"\nlocal-only = ["*.tmp"]\n'
        f'state-dir = "{tmp_path / "file-state"}"\n',
    )
    env = _env(tmp_path)
    cli_state = tmp_path / "cli-state"
    try:
        r = repomount("mount", "work:", "--state-dir", str(cli_state), env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        (mnt / "kept.txt").write_bytes(b"to the server")
        (mnt / "scratch.tmp").write_bytes(b"local only, as the file says")
        assert repomount("sync", str(mnt), env=env).returncode == 0
        assert server.tree("named") == {"kept.txt": b"to the server"}
        assert list(cli_state.glob("*/mount.log")) and not (tmp_path / "file-state").exists()
        u = repomount("unmount", str(mnt), env=env)
        assert u.returncode == 0, u.stderr
        wait_until(lambda: not is_mounted(mnt), 15, "the mount to leave")
    finally:
        force_unmount(mnt)


def test_a_named_remote_without_a_mountpoint_needs_mnt(tmp_path: Path) -> None:
    _write_config(
        tmp_path / "config" / "repomount" / "config.toml", '[remote.w]\nsrc = "relace:x"\n'
    )
    r = repomount("mount", "w:", env=_env(tmp_path))
    assert r.returncode == 2
    assert 'give MNT, or mountpoint = "..." in [remote.w]' in r.stderr
    r = repomount("mount", "nope:", str(tmp_path), env=_env(tmp_path))
    assert (
        r.returncode == 2 and "no [remote.nope] in" in r.stderr and "remotes there: w" in r.stderr
    )
