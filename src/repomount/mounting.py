"""Wiring for `repomount mount`: remote + vfs + fuse, one mount per state directory."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from repomount import arenas, config, control, log, private, sdnotify
from repomount.daemon import check_mountpoint
from repomount.fuse import mount
from repomount.options import DEFAULTS, Options
from repomount.remotes.limits import Timeouts
from repomount.remotes.registry import open_remote
from repomount.vfs.core import Vfs, VfsConfig
from repomount.vfs.journal_peek import pending_in
from repomount.vfs.journal_schema import blob_dir, journal_path

logger = logging.getLogger(__name__)


@dataclass
class MountRequest:
    """One mount: where from, where to, and its options (options.Options: the
    defaults, a config file's values, the command line's, merged by the caller)."""

    src: str
    mountpoint: Path
    cache_dir: Path  # this remote's own: the root from the options, plus a slug
    state_dir: Path
    options: Options = DEFAULTS
    token: str | None = field(default=None, repr=False)  # None: the environment's
    log_file: Path | None = None  # a daemon's log (rotated); None: stderr, or the journal
    on_stop: Callable[[mount.StopProgress], None] | None = None  # the demo shows the stop
    # The directories that did not exist before this mount (new_dirs): a mount that
    # never came up removes them again, but for the log saying why.
    made_dirs: list[Path] = field(default_factory=list)
    dist: str | None = None  # sentry: the files of one dist of the release

    @classmethod
    def create(
        cls,
        src: str,
        mountpoint: Path,
        identity: str,
        options: Options = DEFAULTS,
        *,
        token: str | None = None,
    ) -> MountRequest:
        """A request with this remote's cache and state directories (one per remote)."""
        slug = config.mount_slug(identity)
        return cls(
            src=src,
            mountpoint=mountpoint,
            cache_dir=(options.cache_dir or config.default_cache_root()) / slug,
            state_dir=(options.state_dir or config.default_state_root()) / slug,
            options=options,
            token=token,
        )

    def note_new_dirs(self) -> None:
        """Before the mount's directories are made: which of them (and of their parents)
        this mount makes."""
        for d in (self.state_dir, self.cache_dir):
            while not d.exists() and d not in self.made_dirs:
                self.made_dirs.append(d)  # (each one before its parent)
                d = d.parent

    def timeouts(self) -> Timeouts:
        o = self.options
        return Timeouts(
            connect=o.connect_timeout, answer=o.answer_timeout, read=o.read_timeout,
            min_rate=o.min_rate,
        )  # fmt: skip

    def vfs_config(self) -> VfsConfig:
        o = self.options
        owner = {"uid": o.uid} if o.uid is not None else {}
        if o.gid is not None:
            owner["gid"] = o.gid
        return VfsConfig(
            cache_dir=self.cache_dir,
            state_dir=self.state_dir,
            metadata_ttl=o.metadata_ttl,
            cache_size=o.cache_size,
            flush_delay=o.flush_delay,
            max_flush_window=o.max_flush_window,
            transfers=o.transfers,
            on_conflict=o.on_conflict,
            local_only=o.local_only,
            trust_remote_code=o.trust_remote_code,
            follow_remote_symlinks=o.follow_remote_symlinks,
            **owner,
        )


def dirs_problem(req: MountRequest) -> str | None:
    """Why the mount's state or cache directory cannot be where it is asked: inside the
    mountpoint, every journal write would go through the mount itself, which waits
    for it (the mount hung as it started, and SIGTERM could not stop it)."""
    mnt = os.path.realpath(req.mountpoint)
    for what, d in (("state", req.state_dir), ("cache", req.cache_dir)):
        if os.path.realpath(d).startswith(mnt.rstrip("/") + "/"):
            return (
                f"the {what} directory {d} is inside the mountpoint {req.mountpoint}; "
                f"choose another with --{what}-dir"
            )
    return None


def prepare_local_dirs(req: MountRequest) -> Path:
    """Make the mount's state, cache and control directories private to us (or check
    the ones found there), with the process's umask 077 from now on so everything the
    mount writes in them is 0600 / 0700; returns the control socket's path. Raises
    private.NotPrivateError, with a one-line message, for a directory other users
    own or can write. Idempotent: the CLI calls it before daemonizing, to report
    there and to have the log's directory ready; run_mount calls it again."""
    os.umask(private.PRIVATE_UMASK)
    state, cache = req.state_dir, req.cache_dir
    private.make_private_dir(state, "the state directory", "choose another with --state-dir")
    private.tighten_tree(state)  # pending content an older version left 0644
    private.make_private_dir(cache, "the cache directory", "choose another with --cache-dir")
    return control.prepare_socket(req.mountpoint)


def lock_state_dir(req: MountRequest) -> int | None:
    """The state directory's lock, held (one mount per state directory); None when
    another mount holds it."""
    return control.try_lock(req.state_dir / "lock")


def state_dir_busy(req: MountRequest) -> str:
    return (
        f"{req.src} is already mounted with state dir {req.state_dir}; "
        "give this mount its own --state-dir and --cache-dir"
    )


def run_mount(req: MountRequest, ready: Callable[[str | None], None]) -> int:
    arenas.limit_arenas()  # (before any worker thread allocates)
    log.setup(req.options.log_level, file=req.log_file)
    systemd = sdnotify.Reporter(req.src, str(req.mountpoint))
    mounted = False
    control_socket: Path | None = None  # (found before mounting: see note_state_dir)

    def report(error: str | None) -> None:
        """`ready`, and the mount log and the service manager say what happened."""
        nonlocal mounted
        if error is None:
            mounted = True
            try:
                assert control_socket is not None
                control.note_state_dir(control_socket, req.state_dir)
            except OSError as e:  # only `unmount` after a crash misses it
                logger.warning("cannot note the state directory for unmount: %s", e)
            logger.info("mounted %s on %s", req.src, req.mountpoint)
        else:
            logger.error("not mounted: %s", error)
        systemd.ready(error)
        ready(error)

    def on_stop(progress: mount.StopProgress) -> None:
        systemd.stopping(progress.pending, progress.seconds_left, progress.done)
        if req.on_stop is not None:
            req.on_stop(progress)

    if why := dirs_problem(req):
        report(why)
        return 2
    try:
        control_socket = prepare_local_dirs(req)
    except private.NotPrivateError as e:
        report(str(e))
        return 2
    lock_fd = lock_state_dir(req)
    if lock_fd is None:
        report(state_dir_busy(req))
        return 1
    held = control.hold_mountpoint(control_socket)
    if held is None:
        os.close(lock_fd)
        report(f"{req.mountpoint} is being mounted by another repomount")
        return 2
    # The CLI checked the mountpoint; look again now that no other repomount can mount
    # there until this one ends.
    why = check_mountpoint(req.mountpoint)
    if why:
        os.close(lock_fd)
        os.close(held)
        report(why)
        return 2
    try:
        o = req.options
        remote = open_remote(
            req.src, token=req.token, endpoint=o.endpoint, timeouts=req.timeouts(), dist=o.dist
        )
        vfs = Vfs(remote, req.vfs_config())
        opts = mount.MountOptions(
            req.mountpoint,
            control_socket,
            fuse_options=list(o.fuse_options),
            drain_timeout=o.drain_timeout,
            poll_interval=o.poll_interval,
            read_ahead=o.read_ahead,
            use_change_feed=not o.no_change_feed,
            on_stop=on_stop,
            on_status=systemd.running if sdnotify.listening() else None,
        )
        code = trio.run(mount.run, vfs, opts, report)
        if mounted:
            logger.info("unmounted %s (exit %d)", req.mountpoint, code)
        return code
    finally:
        if mounted and control_socket is not None:
            control.forget_state_note(control_socket)
        if not mounted:
            remove_made_dirs(req)  # (holding the state directory's lock)
        os.close(lock_fd)
        os.close(held)


def remove_made_dirs(req: MountRequest) -> None:
    """A mount that never came up (a wrong token, an unknown repo, a server away) leaves
    nothing behind of what it made, but its log: nothing was written through it, and
    bad input changes nothing (a new state directory held a journal and a 1 MiB
    reserve, a new cache directory its tree). Called holding the state directory's
    lock, so no other mount uses it; a cache directory that holds files is left (a
    mount with a state directory of its own began there meanwhile), and the parents
    made for them go only when empty."""
    for d in (req.state_dir, req.cache_dir):
        if d not in req.made_dirs or not d.is_dir():
            continue
        if d == req.cache_dir and _holds_files(d):
            continue
        if d == req.state_dir and not _nothing_journaled(d):
            continue  # (mounted after all, and written to: what it holds stays)
        for entry in list(d.iterdir()):
            if entry == req.log_file:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    for d in req.made_dirs:
        with contextlib.suppress(OSError):
            d.rmdir()  # (not when something is left in it: the log, say)


def _holds_files(d: Path) -> bool:
    return any(files for _, _, files in os.walk(d))


def _nothing_journaled(state_dir: Path) -> bool:
    """Whether the journal in `state_dir` holds no change and no content: a mount that
    failed once the kernel had mounted it may have taken writes it could not send."""
    for d in (blob_dir(state_dir), state_dir / "conflicts", state_dir / "spool"):
        if d.is_dir() and _holds_files(d):
            return False
    if not journal_path(state_dir).exists():
        return True
    left = pending_in(state_dir, limit=0)  # (read-only, as `unmount` reads a dead mount's)
    return left is not None and left.rows == 0  # (unreadable: kept)
