"""Remote change detection: follow the change feed, or poll, and refresh what changed.

Runs as a background task. Refreshing a directory re-lists it and merges; the merge
queues kernel invalidations (never sent from inside a request handler).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable

import trio

from repomount import paths
from repomount.remotes.base import Gone, NotFound, RemoteChange, RemoteError
from repomount.vfs.core import Vfs

log = logging.getLogger(__name__)

FEED_WAIT = 25.0  # seconds one long-poll may wait on the server
# How long a feed answer may wait for our own requests in flight to be applied, so
# that our own commits coming back through the feed are recognised as ours.
OWN_OUTCOMES_WAIT = 10.0
# After an answer that held only our own commits, the next long-poll waits this long:
# a burst of saves (each fsync a commit) then costs one feed round trip per pause, not
# one per commit competing with the saves. Others' changes in the pause are not missed
# (the poll resumes from the same head), only seen up to this much later.
OWN_ECHO_PAUSE = 0.1


async def watch(vfs: Vfs, poll_interval: float, *, use_feed: bool = True) -> None:
    if use_feed and vfs.remote.capabilities.change_feed:
        await _follow_feed(vfs, poll_interval)
    else:
        await _poll(vfs, poll_interval)


async def _follow_feed(vfs: Vfs, retry_interval: float) -> None:
    since = vfs.head
    relist = False  # the tree is listed again once the feed answers
    while True:
        # While a poll from a known position is open, any change after it answers at
        # once, so loaded listings stay true (until the feed fails or says otherwise).
        vfs.feed_live = since is not None
        try:
            batch = await vfs.remote.changes(since, wait=FEED_WAIT)
        except (Gone, NotFound) as e:
            # `since` names no history the remote keeps: it is too old (Gone), or the
            # repo was deleted (NotFound), and a new one may count its heads from the
            # start. The tree is listed again from the head, once the remote answers.
            log.info("change feed: %s: the tree is listed again", e)
            vfs.feed_live, since, relist = False, None, True
            if isinstance(e, NotFound):  # (not there: asked again later)
                vfs.health.failed(e)
                await trio.sleep(retry_interval)
            continue
        except RemoteError as e:
            vfs.feed_live = False
            vfs.health.failed(e)
            await trio.sleep(retry_interval)
            continue
        vfs.health.ok()
        if since is None:  # (re)starting: the feed gives the head to follow from
            since = batch.head
            # The head first: what changes while the tree is listed is reported.
            if relist:
                if await _guarded(vfs, vfs.refresh_tree()):
                    relist = False
                else:  # again, from the head then
                    since = None
                    await trio.sleep(retry_interval)
            continue
        since = batch.head or since
        await vfs.flusher.outcomes_applied(OWN_OUTCOMES_WAIT)
        news = [c for c in batch.changes if not shows(vfs, c)]  # (not our own commits)
        dirs = {paths.parent_of(c.path) for c in news}
        # A directory that changed itself (mkdir, rename) is re-listed too.
        dirs |= {c.path for c in news if c.op != "write"}
        if news:
            vfs.feed_news += 1  # (a listing in flight now may be older than this)
        if dirs:
            vfs.feed_live = False  # (until these are re-listed)
            await _refresh(vfs, sorted(dirs))
        elif batch.changes and not news:
            await trio.sleep(OWN_ECHO_PAUSE)


async def _poll(vfs: Vfs, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        await _guarded(vfs, vfs.refresh_tree())  # one recursive listing where possible


async def _refresh(vfs: Vfs, dirs: Iterable[str]) -> None:
    await _guarded(vfs, vfs.refresh_dirs(list(dirs)))


async def _guarded(vfs: Vfs, refreshing: Awaitable[None]) -> bool:
    """Whether the refresh went through (a failure is reported, never raised)."""
    try:
        await refreshing
        return True
    except RemoteError as e:
        vfs.health.failed(e)
    except Exception:
        log.exception("refreshing after remote changes failed")
    return False


def shows(vfs: Vfs, change: RemoteChange) -> bool:
    """Whether the mount shows what a change-feed entry says already (our own commits
    come back through the feed): then its directory needs no re-listing, which for a
    big directory is a long merge for nothing."""
    node = vfs.node_at(change.path)
    if change.op == "delete":
        return node is None
    if node is None:
        return False
    if change.op == "mkdir":
        return node.is_dir
    if node.is_dir or change.version is None:
        return False
    caps = vfs.remote.capabilities
    if (
        (caps.file_modes or caps.file_mtimes)
        and change.head is not None
        and not vfs.gens.made_by_us(change.head)
    ):  # someone else's: maybe a new mode or mtime of the same content (version)
        vfs.gens.not_ours(change.path)
        return False
    if node.version == change.version or vfs.gens.ours(change.path, change.version):
        return True
    # Someone else wrote it: a later entry with a version we once wrote there is theirs
    # too (a revert), not ours coming back.
    vfs.gens.not_ours(change.path)
    return False
