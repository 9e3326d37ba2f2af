"""What each change becomes on Sentry's release files API, which has no precondition
at all (docs/remotes.md, "Sentry"): the adapter checks the file's listed `sha1` right
before it changes anything, and names the file by its id, which a replace by someone
else changes (a delete by id then finds nothing: noticed, not overwritten).

- create: one upload (Sentry refuses a taken name and dist: 409);
- replace: a check, the delete by id, the upload (keeping the file's headers);
- delete: a check, the delete by id;
- rename: a check of both names, a delete of a file at the target where the change
  allows it, the `PUT {name}`; a directory is renamed file by file.

Between the check and the request someone else's change can land (the race window),
and between a replace's delete and its upload the name is free.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import (
    Aborted,
    Applied,
    Change,
    Conflict,
    Conflicted,
    Delete,
    Expect,
    Failed,
    Mkdir,
    NotFound,
    Outcome,
    RemoteError,
    Rename,
    Unsupported,
    Write,
    expect_met,
)
from repomount.remotes.http import BODY_READ
from repomount.remotes.sentry_wire import (
    Artifact,
    artifact,
    content_type,
    name_of_path,
    upload_form,
)

if TYPE_CHECKING:
    from repomount.remotes.sentry import SentryRemote

log = logging.getLogger(__name__)


class ChangeSender:
    """Sends one change at a time for a SentryRemote (its requests, listings, hashes)."""

    def __init__(self, remote: SentryRemote) -> None:
        self.remote = remote
        # Paths whose file we deleted to replace it, with the sha1 it had: a replace
        # whose upload failed then finds the file gone by its own hand, not someone's.
        self._replacing: dict[str, str] = {}

    async def apply_one(self, change: Change) -> Outcome:
        if isinstance(change, Write):
            return await self._write(change)
        if isinstance(change, Delete):
            return await self._delete(change)
        if isinstance(change, Rename):
            return await self._rename(change)
        if isinstance(change, Mkdir):
            return Applied(None)  # names are flat: a directory exists through its files
        return Failed(Unsupported(f"Sentry keeps no symbolic links: {change.path!r}"))

    async def _files(self, *paths: str) -> dict[str, Artifact | None]:
        """The file at each path now (one list request, filtered by name)."""
        names = [name_of_path(p) for p in paths]
        listed = {a.path: a for a in await self.remote.list_files(names)}
        return {p: listed.get(p) for p in paths}

    async def _write(self, change: Write) -> Outcome:
        ours = await self._sha1_of(change)
        if change.expect is Expect.ABSENT:
            return await self._upload(change, ours, None)
        now = (await self._files(change.path))[change.path]
        if now is None:
            mine = self._replacing.get(change.path)
            if change.expect is Expect.ANY or (mine is not None and mine == change.expect):
                return await self._upload(change, ours, None)  # (gone by our own delete)
            return Conflicted(None)
        if change.expect is not Expect.ANY and now.sha1 != change.expect:
            return Conflicted(now.sha1)
        if now.sha1 == ours:
            return Applied(ours)  # the same content: nothing to send
        self._replacing[change.path] = now.sha1
        if not await self._delete_file(now):
            again = (await self._files(change.path))[change.path]
            if again is not None:
                self._replacing.pop(change.path, None)
                return Conflicted(again.sha1)  # replaced by someone else meanwhile
        return await _after_a_change(self._upload(change, ours, now))

    async def _upload(self, change: Write, ours: str, replaced: Artifact | None) -> Outcome:
        """POST the new file (keeping the headers of the one it replaces). A 409 means the
        name is taken: the file there is reported (our own, from a lost answer, is
        recognised through version_of)."""
        headers = dict(replaced.headers) if replaced is not None else {}
        form = upload_form(
            name_of_path(change.path),
            self.remote.dist,
            content_type(change.path, headers),
            headers,
        )
        size = (await trio.Path(change.source).stat()).st_size
        try:
            response = await self.remote.request(
                "POST",
                f"{self.remote.files_url}",
                headers={
                    "Content-Type": form.content_type,
                    "Content-Length": str(len(form.head) + size + len(form.tail)),
                },
                content=_body(form.head, change.source, form.tail),
                # A resend of an upload that landed is refused (409), never stored twice.
                idempotent=True,
            )
        except Conflict:
            found = (await self._files(change.path))[change.path]
            if found is None:
                return Failed(Aborted(f"{change.path!r} was taken, then freed: send again"))
            self._replacing.pop(change.path, None)
            return Conflicted(found.sha1)
        self._replacing.pop(change.path, None)
        landed = artifact(json_object(response))
        if landed.sha1 != ours:
            log.warning("%s: %r landed as %s, not %s", self.remote, change.path, landed.sha1, ours)
        return Applied(landed.sha1)

    async def _delete_file(self, found: Artifact) -> bool:
        """DELETE by id: False when that id is gone (deleted or replaced meanwhile)."""
        url = f"{self.remote.files_url}{quote(found.id, safe='')}/"
        try:
            await self.remote.request("DELETE", url, idempotent=True)
        except NotFound:
            return False
        return True

    async def _delete(self, change: Delete) -> Outcome:
        now = (await self._files(change.path))[change.path]
        if now is None:  # already gone (or a directory only the mount has)
            return Conflicted(None) if isinstance(change.expect, str) else Applied(None)
        if not expect_met(change.expect, now.sha1):
            return Conflicted(now.sha1)
        if not await self._delete_file(now):
            again = (await self._files(change.path))[change.path]
            if again is not None:
                return Conflicted(again.sha1)
        return Applied(None)

    async def _rename(self, change: Rename) -> Outcome:
        src, dst = change.src, change.dst
        now = await self._files(src, dst)
        source, target = now[src], now[dst]
        if source is None:
            return await self._rename_dir(change)
        if not expect_met(change.expect, source.sha1):
            return Conflicted(source.sha1)
        if src == dst:
            return Applied(source.sha1)
        if target is not None or change.expect_to not in (Expect.ANY, Expect.ABSENT):
            if not expect_met(change.expect_to, None if target is None else target.sha1):
                return Conflicted(None if target is None else target.sha1)
            if target is not None and not await self._delete_file(target):
                again = (await self._files(dst))[dst]
                if again is not None:
                    return Conflicted(again.sha1)
            return await _after_a_change(self._put_name(source, dst))
        return await self._put_name(source, dst)

    async def _put_name(self, source: Artifact, dst: str) -> Outcome:
        url = f"{self.remote.files_url}{quote(source.id, safe='')}/"
        try:
            response = await self.remote.request(
                "PUT", url, json={"name": name_of_path(dst)}, idempotent=True
            )
        except NotFound:
            found = (await self._files(source.path))[source.path]
            return Conflicted(None if found is None else found.sha1)  # changed meanwhile
        except Conflict:
            found = (await self._files(dst))[dst]
            return Conflicted(None if found is None else found.sha1)  # taken meanwhile
        return Applied(artifact(json_object(response)).sha1)

    async def _rename_dir(self, change: Rename) -> Outcome:
        """A directory: each file below it renamed (no file: nothing to do)."""
        src, dst = change.src, change.dst
        below = [
            a
            for a in await self.remote.list_files([name_of_path(src) + "/"])
            if a.path.startswith(src + "/")
        ]
        if not below:
            return Conflicted(None) if isinstance(change.expect, str) else Applied(None)
        taken = [
            a
            for a in await self.remote.list_files([name_of_path(dst)])
            if a.path == dst or a.path.startswith(dst + "/")
        ]
        if taken:
            return Conflicted(taken[0].sha1 if taken[0].path == dst else None)
        for n, a in enumerate(below):
            put = self._put_name(a, dst + a.path[len(src) :])
            outcome = await (_after_a_change(put) if n else put)
            if not isinstance(outcome, Applied):
                return outcome
        return Applied(None)

    async def _sha1_of(self, change: Write) -> str:
        known = self.remote.version_of(change.sha256)
        if known is None:
            known = await trio.to_thread.run_sync(_sha1_file, change.source)
            self.remote.remember(change.sha256, known)
        return known


async def _after_a_change(outcome: Awaitable[Outcome]) -> Outcome:
    """The outcome of a request sent after one that changed the release: a failure is
    this change's (Failed), never the batch's, as something was applied already."""
    try:
        return await outcome
    except RemoteError as error:
        return Failed(error)


def _sha1_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def _body(head: bytes, source: Path, tail: bytes) -> Callable[[], AsyncIterator[bytes]]:
    """A multipart body streamed from the spool file; a factory, so a retry resends it."""

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        async with await trio.open_file(source, "rb") as f:
            while chunk := await f.read(BODY_READ):
                yield chunk
        yield tail

    return chunks
