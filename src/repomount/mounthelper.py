"""`mount.fuse.repomount` and `umount.fuse.repomount`: repomount for mount(8), umount(8)
and /etc/fstab, as sshfs and s3fs are there.

For a file system of type `fuse.repomount` (an fstab line, `mount -t fuse.repomount`)
mount(8) runs `/sbin/mount.fuse.repomount SRC MNT [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`.
SRC is what `repomount mount` takes (a URL, `relace:ID`, or `NAME:` for the config
file's remote). Each option of OPTS is one of:
- a repomount mount option, `name=value` or a flag `name`, with `-` or `_`
  (`flush_delay=0.2`, `no_change_feed`): `repomount mount --name value`; `config=PATH`
  is `--config PATH`;
- a FUSE option (`allow_other`, `default_permissions`, `ro`, `nosuid`, ...): `-o`;
- one for mount(8) or systemd alone (`_netdev`, `noauto`, `nofail`, `x-systemd.*`,
  `comment=`, `defaults`, ...): nothing to do here.
An unknown option fails the mount with a one-line message (ignored with -s).

umount(8) runs `/sbin/umount.fuse.repomount MNT` for such a mount: `repomount unmount`
(what is pending is sent first, within the drain timeout; the rest stays in the journal).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from repomount.options import DEFAULTS, spec_for

# FUSE's own mount options (libfuse's mount.c), passed on with -o.
# fmt: off
FUSE_FLAGS = frozenset({
    "allow_other", "allow_root", "auto_unmount", "default_permissions", "ro", "rw", "suid",
    "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync", "dirsync", "atime",
    "noatime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "lazytime", "nolazytime",
})
FUSE_VALUED = frozenset({"max_read", "blksize", "context", "fscontext", "defcontext",
                         "rootcontext"})
# Options for mount(8), fstab and systemd, not for the file system.
IGNORED = frozenset({"defaults", "auto", "noauto", "_netdev", "nofail", "user", "nouser",
                     "users", "owner", "group"})
# fmt: on
IGNORED_PREFIXES = ("x-", "X-", "comment=", "user=")

MOUNT_USAGE = "usage: mount.fuse.repomount SRC MNT [-sfnv] [-o OPTION[,OPTION...]]"
UMOUNT_USAGE = "usage: umount.fuse.repomount MNT [-flnrv]"
EX_USAGE = 1  # mount(8)'s "incorrect invocation"
EX_FAIL = 32  # mount(8)'s "mount failure"


class HelperError(Exception):
    """Arguments the helper cannot use; one line."""


def translate(src: str, mnt: str, options: list[str], *, sloppy: bool = False) -> list[str]:
    """`SRC MNT -o OPTS` -> the arguments of `repomount mount`."""
    argv = ["mount", src, mnt]
    fuse: list[str] = []
    for opt in (o.strip() for group in options for o in group.split(",")):
        if not opt or opt in IGNORED or opt.startswith(IGNORED_PREFIXES):
            continue
        key, eq, value = opt.partition("=")
        spec = spec_for(key)
        if key == "config":
            if not value:
                raise HelperError("config= needs the config file's path")
            argv.append(f"--config={value}")
        elif spec is not None and spec.field != "fuse_options":
            if spec.is_flag:
                try:
                    on = spec.from_text(value)
                except ValueError as e:
                    raise HelperError(f"{key}: {e}") from None
                if on:
                    argv.append(f"--{spec.name}")
            elif not eq or not value:
                raise HelperError(f"option {key} needs a value: {key}=...")
            else:
                try:  # here, in one line: `repomount mount` would print its whole usage
                    spec.from_text(value)
                except ValueError as e:
                    raise HelperError(f"{key}: {e}") from None
                argv.append(f"--{spec.name}={value}")
        elif (key in FUSE_FLAGS and not eq) or (key in FUSE_VALUED and value):
            fuse.append(opt)
        elif not sloppy:
            raise HelperError(
                f"unknown option {opt!r}: not a repomount mount option (repomount mount "
                "--help), a FUSE option or one for mount(8)"
            )
    if fuse:
        argv += ["-o", ",".join(fuse)]
    return argv


def _parse(argv: list[str], flags: str, usage: str) -> tuple[list[str], set[str], list[str]]:
    """mount(8)'s helper arguments: (positionals, single-letter flags, -o values)."""
    positional: list[str] = []
    seen: set[str] = set()
    options: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in ("-o", "-t", "-N"):
            value = next(args, None)
            if value is None:
                raise HelperError(f"{arg} needs a value; {usage}")
            if arg == "-o":
                options.append(value)
            elif arg == "-N":
                raise HelperError("-N (another mount namespace) is not supported")
        elif arg.startswith("-o") and len(arg) > 2:
            options.append(arg[2:])
        elif arg.startswith("-") and len(arg) > 1:
            letters = set(arg[1:])
            if not letters <= set(flags):
                raise HelperError(f"unknown flag {arg}; {usage}")
            seen |= letters
        else:
            positional.append(arg)
    return positional, seen, options


def mount_main(argv: list[str] | None = None) -> int:
    from repomount import cli

    try:
        positional, flags, options = _parse(
            sys.argv[1:] if argv is None else argv, "sfnvh", MOUNT_USAGE
        )
        if "h" in flags or len(positional) != 2:
            raise HelperError(MOUNT_USAGE)
        args = translate(positional[0], positional[1], options, sloppy="s" in flags)
    except HelperError as e:
        print(f"mount.fuse.repomount: {e}", file=sys.stderr)
        return EX_USAGE
    if "f" in flags or "v" in flags:  # fake: say what would run; verbose: and run it
        print("repomount " + shlex.join(args), file=sys.stderr)
        if "f" in flags:
            return 0
    return 0 if cli.main(args) == 0 else EX_FAIL


def umount_main(argv: list[str] | None = None) -> int:
    from repomount import daemon, mounts

    try:
        positional, flags, _ = _parse(
            sys.argv[1:] if argv is None else argv, "flnrvdh", UMOUNT_USAGE
        )
        if "h" in flags or len(positional) != 1:
            raise HelperError(UMOUNT_USAGE)
    except HelperError as e:
        print(f"umount.fuse.repomount: {e}", file=sys.stderr)
        return EX_USAGE
    mountpoint = Path(positional[0])
    code, message = daemon.unmount(mountpoint, timeout=DEFAULTS.drain_timeout, lazy="l" in flags)
    top = mounts.mount_at(os.path.realpath(mountpoint))
    gone = code == 0 or top is None or top.fstype != mounts.FSTYPE
    print(f"umount.fuse.repomount: {message}", file=sys.stderr if code else sys.stdout)
    return 0 if gone else EX_FAIL


if __name__ == "__main__":
    sys.exit(umount_main() if Path(sys.argv[0]).name.startswith("umount") else mount_main())
