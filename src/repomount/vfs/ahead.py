"""Contents uploaded ahead of their commit (`Remote.upload_ahead`).

The flusher waits for a quiet moment (`flush_delay`) before it sends a batch, so a long
burst of writes (`cp -r`, `tar x`, `rsync`, a checkout) used to send nothing until it
ended, and then all of its content: over a WAN, the transfer came after the burst
instead of during it. Here, once AHEAD_MIN bytes of content journaled since the last
upload are waiting, they go to the remote (hashed in a worker thread, one upload at a
time, packed as the remote packs a commit's content); the batch's commit then names
them (`Write.staged`) and uploads only the rest. Nothing is committed ahead: a content
alone changes nothing anyone sees, and the changes keep their order, preconditions and
idempotency keys.

An upload that fails, or was cut off, is simply not used (its changes upload their
content themselves), and after a remote's failure nothing goes ahead until the remote
takes a change again. A content the journal stops sending (its file deleted or
written again first) went for nothing; the server drops unreferenced content after a
grace period.

This module owns the uploads ahead: which contents wait, which went, and which a round
took.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import trio

from repomount.remotes.base import Content, Remote, RemoteError
from repomount.vfs.digests import Digests
from repomount.vfs.journal import Journal

log = logging.getLogger(__name__)

AHEAD_MIN = 8 << 20  # content waiting that starts an upload ahead
AHEAD_MAX = 64 << 20  # ... of at most this much


class _Upload:
    """One upload ahead: the blobs it carries, and which of them the remote holds."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.stored: dict[str, str] = {}  # blob -> its SHA-256, once the remote has it


class UploadsAhead:
    def __init__(
        self,
        remote: Remote,
        journal: Journal,
        digests: Digests,
        staged: Callable[[str], bool],
    ) -> None:
        self.remote = remote
        self.journal = journal
        self.digests = digests
        self._staged = staged  # whether a blob has its own upload (staging.py)
        self._seen = 0  # the journal's records up to this id were looked at
        self._waiting: dict[str, int] = {}  # blob -> size: journaled, not sent yet
        self._waiting_bytes = 0
        self._sent: dict[str, _Upload] = {}  # blob -> the upload ahead that carries it
        self._taken: dict[str, bool] = {}  # blob -> what this round's take() said
        self._wake = trio.Event()
        self._paused = False  # a remote's failure: until it takes a change again
        self.uploads = 0  # uploads ahead that reached the remote (status, tests)

    # ------------------------------------------------------------------ signals in

    def notice(self) -> None:
        """A change was journaled."""
        self._wake.set()

    def resume(self) -> None:
        """The remote took a change."""
        if self._paused:
            self._paused = False
            self._wake.set()

    def claim(self, blobs: Iterable[str]) -> None:
        """A round begins that sends these contents: none of them goes ahead now (one
        already on its way is `take`n)."""
        self._look()
        self._taken.clear()
        for blob in blobs:
            self._drop_waiting(blob)

    async def take(self, blob: str, sha256: str) -> bool:
        """Whether the remote holds `blob` (digest `sha256`) through an upload ahead,
        waiting for that to end. The same answer within a round; a later round (the
        change sent again, say after the remote lost the content) says False, so the
        change uploads its content itself."""
        if blob in self._taken:
            return self._taken[blob]
        upload = self._sent.pop(blob, None)
        held = False
        if upload is not None:
            await upload.done.wait()
            held = upload.stored.get(blob) == sha256
        self._taken[blob] = held
        return held

    def forget_unused(self) -> None:
        """Forget the contents the journal no longer sends."""
        for blob in [b for b in self._waiting if not self.journal.uses_blob(b)]:
            self._drop_waiting(blob)
        for blob in [b for b, u in self._sent.items() if u.done.is_set()]:
            if not self.journal.uses_blob(blob):
                del self._sent[blob]

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        if not self.remote.capabilities.upload_ahead:
            return
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._look()
            if not self._paused and self._waiting_bytes >= AHEAD_MIN:
                await self._upload()

    async def upload_waiting(self) -> None:
        """Send what waits now, whatever its size (the loop does once it is AHEAD_MIN)."""
        self._look()
        if self._waiting:
            await self._upload()

    def _look(self) -> None:
        """Take in the writes journaled since the last look."""
        if not self.remote.capabilities.upload_ahead:
            return
        for rec in self.journal.added_after(self._seen):
            self._seen = rec.id
            blob = rec.blob
            if rec.op != "write" or blob is None or rec.state != "pending":
                continue
            if blob in self._waiting or blob in self._sent or self._staged(blob):
                continue
            if self.journal.sparse_of(blob) is not None:  # (sent once laid over its base)
                continue
            try:
                size = os.stat(self.journal.blob_path(blob)).st_size
            except OSError:  # (gone already: nothing to send)
                continue
            if size == 0:  # (nothing to send ahead)
                continue
            self._waiting[blob] = size
            self._waiting_bytes += size

    def _drop_waiting(self, blob: str) -> None:
        size = self._waiting.pop(blob, None)
        if size is not None:
            self._waiting_bytes -= size

    async def _upload(self) -> None:
        """Send the waiting contents, oldest first, up to AHEAD_MAX bytes."""
        blobs: list[str] = []
        total = 0
        for blob, size in list(self._waiting.items()):
            if blobs and total + size > AHEAD_MAX:
                break
            blobs.append(blob)
            total += size
            self._drop_waiting(blob)
        upload = _Upload()
        for blob in blobs:
            self._sent[blob] = upload
        try:
            await self._send(upload, blobs)
        except RemoteError as e:
            log.info("content uploaded ahead of its commit failed (it goes with it): %s", e)
            self._paused = True
        except OSError as e:  # (a content file deleted meanwhile, say)
            log.debug("content uploaded ahead of its commit failed: %s", e)
        except Exception:  # (never the mount's end: the changes upload it themselves)
            log.exception("content uploaded ahead of its commit failed unexpectedly")
            self._paused = True
        finally:
            upload.done.set()

    async def _send(self, upload: _Upload, blobs: list[str]) -> None:
        await self.digests.prepare(blobs, missing_ok=True)
        shas: dict[str, str] = {}  # blob -> its digest
        contents: dict[str, Content] = {}  # digest -> one blob of it (each content once)
        for blob in blobs:
            known = self.digests.known(blob)
            if known is None or not self.journal.uses_blob(blob):
                continue  # (no longer sent: deleted, written again, or sent meanwhile)
            size, sha = known
            contents.setdefault(sha, Content(sha, self.journal.blob_path(blob), size))
            shas[blob] = sha
        if not contents:
            return
        stored = await self.remote.upload_ahead(list(contents.values()))
        upload.stored = {blob: sha for blob, sha in shas.items() if sha in stored}
        self.uploads += 1
