"""The mount options on a command line, built from options.SPECS, and which were given.

The parser's defaults are the Options defaults (so `--help` shows them), and every
option given on the command line is recorded: only those override a config file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from repomount.options import SPECS, Spec

_GIVEN = "_options_given"  # the Namespace attribute holding the fields given


class _Given(argparse.Action):
    """Stores an option's value and records that the command line gave it."""

    def __init__(self, *args: Any, spec: Spec, **kwargs: Any) -> None:
        self.spec = spec
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value: Any = True if self.spec.is_flag else values
        if self.spec.short == "-o" and self.dest in given_fields(namespace):
            value = (*getattr(namespace, self.dest), *value)  # -o a -o b: both
        setattr(namespace, self.dest, value)
        setattr(namespace, _GIVEN, {*given_fields(namespace), self.dest})


def _argtype(spec: Spec) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = spec.name
    return convert


def add_mount_options(p: argparse.ArgumentParser) -> None:
    """Every mount option of options.SPECS, as `--name` (and its short form)."""
    for spec in SPECS:
        flags = [*([spec.short] if spec.short else []), f"--{spec.name}"]
        help_text = f"{spec.help} (default {spec.shown_default()})".replace("%", "%%")
        if spec.is_flag:
            p.add_argument(
                *flags, dest=spec.field, action=_Given, spec=spec, nargs=0,
                default=spec.default(), help=help_text,
            )  # fmt: skip
        else:
            p.add_argument(
                *flags, dest=spec.field, action=_Given, spec=spec, type=_argtype(spec),
                default=spec.default(), metavar=spec.metavar, help=help_text,
            )  # fmt: skip


def given_fields(args: argparse.Namespace) -> set[str]:
    given: set[str] = getattr(args, _GIVEN, set())
    return given


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options the command line gave: Options field -> value."""
    return {name: getattr(args, name) for name in given_fields(args)}
