"""Issue 15, one options type: a mount option's default was written in six places (the
command line, MountRequest, VfsConfig, the FUSE layer's MountOptions, `unmount` and
the demo), free to drift apart.

Now `options.Options` holds every mount option with THE default, `options.SPECS` says
how each is written; the command line, the config file, the mount helper's `-o` and
every layer below read them from there, and one value written each of the three ways
gives the same Options.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from repomount import cli_options, configfile, daemon, demo
from repomount.cli import build_parser
from repomount.fuse.mount import MountOptions
from repomount.mounthelper import translate
from repomount.options import DEFAULTS, SPECS, Options, Spec
from repomount.remotes.limits import Timeouts
from repomount.vfs.state import VfsConfig

# A value other than the default for each option, as a user writes it.
SAMPLES = {
    "endpoint": "https://api.example",
    "dist": "d1",
    "fuse_options": "allow_other",
    "metadata_ttl": "7",
    "cache_dir": "/var/tmp/c",
    "cache_size": "2G",
    "state_dir": "/var/tmp/s",
    "flush_delay": "0.2",
    "max_flush_window": "9",
    "transfers": "3",
    "read_ahead": "4M",
    "on_conflict": "fail",
    "poll_interval": "11",
    "local_only": "*.tmp",
    "drain_timeout": "5",
    "connect_timeout": "4",
    "answer_timeout": "6",
    "read_timeout": "8",
    "min_rate": "1M",
    "uid": "123",
    "gid": "456",
    "log_level": "DEBUG",
}


def _parse_mount(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    found = dict(sub.choices)
    [config_sub] = [
        a for a in found["config"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    found["config check"] = config_sub.choices["check"]
    return found


def test_every_option_has_one_spec() -> None:
    assert sorted(s.field for s in SPECS) == sorted(f.name for f in fields(Options))
    assert all(s.field in SAMPLES or s.is_flag for s in SPECS)


@pytest.mark.parametrize("command", ["mount", "config check"])
def test_the_command_line_defaults_are_the_options_defaults(command: str) -> None:
    parser = _commands()[command]
    for spec in SPECS:
        assert parser.get_default(spec.field) == getattr(DEFAULTS, spec.field), spec.name


def test_the_layers_below_take_their_defaults_from_options() -> None:
    vfs = VfsConfig(cache_dir=Path("/c"), state_dir=Path("/s"))
    for name in ("metadata_ttl", "cache_size", "flush_delay", "max_flush_window",
                 "transfers", "on_conflict", "local_only", "trust_remote_code",
                 "follow_remote_symlinks"):  # fmt: skip
        assert getattr(vfs, name) == getattr(DEFAULTS, name), name
    fuse = MountOptions(Path("/m"), Path("/sock"))
    assert fuse.drain_timeout == DEFAULTS.drain_timeout
    assert fuse.poll_interval == DEFAULTS.poll_interval
    assert fuse.use_change_feed == (not DEFAULTS.no_change_feed)
    assert Timeouts() == Timeouts(
        DEFAULTS.connect_timeout, DEFAULTS.answer_timeout, DEFAULTS.read_timeout,
        DEFAULTS.min_rate,
    )  # fmt: skip
    unmount = inspect.signature(daemon.unmount).parameters["timeout"].default
    demo_drain = inspect.signature(demo.run_demo).parameters["drain_timeout"].default
    assert unmount == demo_drain == DEFAULTS.drain_timeout
    commands = _commands()
    for name in ("unmount", "demo"):
        assert commands[name].get_default("drain_timeout") == DEFAULTS.drain_timeout


def _from_command_line(spec: Spec) -> dict[str, Any]:
    value = [] if spec.is_flag else [SAMPLES[spec.field]]
    args = _parse_mount(["mount", "relace:x", "/m", f"--{spec.name}", *value])
    return cli_options.given_options(args)


def _from_config(spec: Spec, tmp_path: Path) -> dict[str, Any]:
    value = "true" if spec.is_flag else f'"{SAMPLES[spec.field]}"'
    text = f'[remote.w]\nsrc = "relace:x"\n{spec.name} = {value}\n'
    return configfile.parse(text, tmp_path / "c.toml").remote("w").options


def _from_mount_helper(spec: Spec) -> dict[str, Any]:
    option = spec.field if spec.is_flag else f"{spec.field}={SAMPLES[spec.field]}"
    if spec.field == "fuse_options":
        option = SAMPLES[spec.field]  # a FUSE option is written as itself
    return cli_options.given_options(_parse_mount(translate("relace:x", "/m", [option])))


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_one_value_three_ways_one_options(spec: Spec, tmp_path: Path) -> None:
    cli = _from_command_line(spec)
    assert cli.keys() == {spec.field} and cli[spec.field] != getattr(DEFAULTS, spec.field)
    assert _from_config(spec, tmp_path) == cli
    assert _from_mount_helper(spec) == cli
    assert DEFAULTS.updated(cli) == Options(**cli)


def test_zero_means_at_once_where_it_can() -> None:
    """`--flush-delay 0` (send at once), a 0 TTL, a 0 drain are values users and the
    suite's own mounts use; a negative or infinite one is refused in one line."""
    ns = _parse_mount(["mount", "http://h/r", "/mnt", "--flush-delay", "0", "--metadata-ttl",
                       "0", "--max-flush-window", "0", "--drain-timeout", "0"])  # fmt: skip
    assert (ns.flush_delay, ns.metadata_ttl, ns.max_flush_window, ns.drain_timeout) == (0,) * 4
    for bad in ("-1", "inf", "soon"):
        with pytest.raises(SystemExit):
            _parse_mount(["mount", "http://h/r", "/mnt", "--flush-delay", bad])
