"""Wiring for `repomount mount`: remote + vfs + fuse, one mount per state directory."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from repomount import config, control, log, private
from repomount.fuse import mount
from repomount.options import DEFAULT_DRAIN_TIMEOUT
from repomount.remotes.limits import Timeouts
from repomount.remotes.registry import open_remote
from repomount.vfs.conflicts import Policy
from repomount.vfs.core import DEFAULT_LOCAL_ONLY, Vfs, VfsConfig

logger = logging.getLogger(__name__)


@dataclass
class MountRequest:
    src: str
    mountpoint: Path
    endpoint: str | None
    cache_dir: Path
    state_dir: Path
    metadata_ttl: float = 5.0
    cache_size: int = 10 << 30
    fuse_options: list[str] = field(default_factory=list)
    log_level: str = "INFO"
    flush_delay: float = 0.5
    max_flush_window: float = 5.0
    transfers: int = 4
    on_conflict: Policy = Policy.KEEP_BOTH
    poll_interval: float = 10.0
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    use_change_feed: bool = True
    local_only: tuple[str, ...] = DEFAULT_LOCAL_ONLY
    trust_remote_code: bool = False
    follow_remote_symlinks: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    on_stop: Callable[[mount.StopProgress], None] | None = None  # the demo shows the stop
    dist: str | None = None  # sentry: the files of one dist of the release

    @classmethod
    def from_args(cls, args: argparse.Namespace, mountpoint: Path, identity: str) -> MountRequest:
        slug = config.mount_slug(identity)
        options = [o.strip() for group in args.options for o in group.split(",") if o.strip()]
        return cls(
            src=args.src,
            mountpoint=mountpoint,
            endpoint=args.endpoint,
            dist=args.dist,
            cache_dir=(args.cache_dir or config.default_cache_root()) / slug,
            state_dir=(args.state_dir or config.default_state_root()) / slug,
            metadata_ttl=args.metadata_ttl,
            cache_size=args.cache_size,
            fuse_options=options,
            log_level=args.log_level,
            flush_delay=args.flush_delay,
            max_flush_window=args.max_flush_window,
            transfers=args.transfers,
            on_conflict=Policy(args.on_conflict),
            poll_interval=args.poll_interval,
            drain_timeout=args.drain_timeout,
            use_change_feed=not args.no_change_feed,
            local_only=tuple(g.strip() for g in args.local_only.split(",") if g.strip()),
            trust_remote_code=args.trust_remote_code,
            follow_remote_symlinks=args.follow_remote_symlinks,
            timeouts=Timeouts(
                connect=args.connect_timeout,
                answer=args.answer_timeout,
                read=args.read_timeout,
                min_rate=args.min_rate,
            ),
        )


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


def run_mount(req: MountRequest, ready: Callable[[str | None], None]) -> int:
    log.setup(req.log_level)
    mounted = False

    def report(error: str | None) -> None:
        """`ready`, and the mount log says what happened."""
        nonlocal mounted
        if error is None:
            mounted = True
            logger.info("mounted %s on %s", req.src, req.mountpoint)
        else:
            logger.error("not mounted: %s", error)
        ready(error)

    try:
        control_socket = prepare_local_dirs(req)
    except private.NotPrivateError as e:
        report(str(e))
        return 2
    lock_fd = os.open(req.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        report(
            f"{req.src} is already mounted with state dir {req.state_dir}; "
            "give this mount its own --state-dir and --cache-dir"
        )
        return 1
    try:
        remote = open_remote(req.src, endpoint=req.endpoint, timeouts=req.timeouts, dist=req.dist)
        vfs = Vfs(
            remote,
            VfsConfig(
                cache_dir=req.cache_dir,
                state_dir=req.state_dir,
                metadata_ttl=req.metadata_ttl,
                cache_size=req.cache_size,
                flush_delay=req.flush_delay,
                max_flush_window=req.max_flush_window,
                transfers=req.transfers,
                on_conflict=req.on_conflict,
                local_only=req.local_only,
                trust_remote_code=req.trust_remote_code,
                follow_remote_symlinks=req.follow_remote_symlinks,
            ),
        )
        opts = mount.MountOptions(
            req.mountpoint,
            control_socket,
            fuse_options=req.fuse_options,
            drain_timeout=req.drain_timeout,
            poll_interval=req.poll_interval,
            use_change_feed=req.use_change_feed,
            on_stop=req.on_stop,
        )
        code = trio.run(mount.run, vfs, opts, report)
        if mounted:
            logger.info("unmounted %s (exit %d)", req.mountpoint, code)
        return code
    finally:
        os.close(lock_fd)
