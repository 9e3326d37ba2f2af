"""`repomount config check`: what a mount of each named remote would use, tokens
redacted; and the `--config` option the commands that read the file share."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from repomount import cli_options, config, configfile
from repomount.cli_args import environment
from repomount.cli_mount import FROM_FILE, Resolved, fail, resolve
from repomount.options import SPECS

ENV_CONFIG = """\
  XDG_CONFIG_HOME          the config file is $XDG_CONFIG_HOME/repomount/config.toml
                           (default ~/.config/repomount/config.toml; --config wins)
"""


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="the config file of named remotes (default "
        "$XDG_CONFIG_HOME/repomount/config.toml); refused if others may read it",
    )


def add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config",
        help="check the config file of named remotes",
        description="The config file names remotes, each with its source, token, "
        "mountpoint and mount options, for `repomount mount NAME: [MNT]`, the mount "
        "helper and the systemd unit (README, 'Mount at boot').",
    )
    commands = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    c = commands.add_parser(
        "check",
        help="check the file and print what a mount would use, tokens redacted",
        description="Check the config file (it must be private: chmod 600) and print "
        "what a mount of each named remote, or of NAME:, would use: every option with "
        "where its value comes from (default, config file, command line). Tokens are "
        "never printed. Exit 2 when the file cannot be used.",
        epilog=environment(ENV_CONFIG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("name", metavar="NAME:", nargs="?", help="one named remote (default: every one)")
    add_config_option(c)
    cli_options.add_mount_options(c)
    c.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = configfile.load(args.config)
    except configfile.ConfigError as e:
        return fail(str(e), 2)
    if not cfg.exists:
        return fail(f"no config file {cfg.path}; named remotes need one (--config PATH)", 1)
    mode = stat.S_IMODE(os.stat(cfg.path).st_mode)
    print(f"{cfg.path}: private (mode {mode:04o}), {len(cfg.remotes)} remote(s)")
    if args.name is not None:
        name = configfile.remote_name(args.name) or configfile.remote_name(args.name + ":")
        if name is None:
            return fail(f"not a remote's name: {args.name!r}", 2)
        names = [name]
    else:
        names = sorted(cfg.remotes)
    code = 0
    for name in names:
        try:
            resolved = resolve(f"{name}:", None, args, args.config)
        except configfile.ConfigError as e:
            return fail(str(e), 2)
        code = max(code, _show(resolved))
    return code


def _show(r: Resolved) -> int:
    """Print one remote's values; 1 when its source would not open (0 otherwise)."""
    from repomount.remotes.registry import open_remote

    problem = ""
    try:
        identity = open_remote(r.src, token=r.token, endpoint=r.options.endpoint).identity
    except ValueError as e:
        problem = str(e)
    o = r.options
    rows = [
        ("src", r.src, FROM_FILE),
        ("token", "set (not shown)" if r.token else "none: read from the environment "
         "(see repomount mount --help)", FROM_FILE if r.token else ""),
        ("mountpoint", str(r.mountpoint) if r.mountpoint else "none: give MNT", FROM_FILE
         if r.mountpoint else ""),
    ]  # fmt: skip
    for what, root, default in (
        ("cache", o.cache_dir, config.default_cache_root()),
        ("state", o.state_dir, config.default_state_root()),
    ):
        where = (root or default) / ("?" if problem else config.mount_slug(identity))
        rows.append((what, str(where), ""))
    for spec in SPECS:
        value = getattr(o, spec.field)
        shown = spec.show(value) if value not in (None, ()) else spec.shown_default()
        rows.append((spec.name, shown, r.origins.get(spec.field, "default")))
    if problem:
        rows.append(("problem", problem, ""))
    print(f"[remote.{r.name}]")
    width = max(len(key) for key, _, _ in rows)
    values = min(40, max(len(value) for _, value, origin in rows if origin))
    for key, value, origin in rows:
        print(
            f"  {key:<{width}}  {value:<{values}}  ({origin})"
            if origin
            else f"  {key:<{width}}  {value}"
        )
    sys.stdout.flush()
    return 1 if problem else 0
