"""A spool written from empty, in order (OpenFile.in_order counts its bytes): hashed from
its bytes as they come while it is small (SMALL_HASHED), hashed in a thread as it grows
once past sidehash.BATCH (sidehash.py), uploaded as it grows once past STAGE_AFTER
(staging.py), and all handed to the flusher when the spool is frozen into the journal
as a blob, so that its upload neither reads nor hashes it again. Any other write (a
rewrite, a hole) stops them (OpenFile.stop_hashing)."""

from __future__ import annotations

import os

from repomount import sidehash
from repomount.sidehash import SideHash
from repomount.vfs.digests import Digests
from repomount.vfs.files import OpenFile
from repomount.vfs.staging import STAGE_AFTER, Stager

# A spool written in order is hashed from its bytes as they come, up to this size.
SMALL_HASHED = 64 << 10


def wrote(f: OpenFile, off: int, data: bytes, stager: Stager | None) -> None:
    """Count `data`, written at `off` to a spool being written in order (and hash it,
    while the spool is small); past STAGE_AFTER, start its staged upload with `stager`
    (None: the file never goes to the remote)."""
    if off != f.in_order:
        f.stop_hashing()  # (a rewrite, or a hole)
        return
    f.in_order += len(data)
    if f.small is not None:
        if f.in_order <= SMALL_HASHED:
            f.small.update(data)
        else:
            f.small = None  # (hashed by `appended`, or from the blob when sent)
    if f.appended is None and f.staging is None and f.in_order >= sidehash.BATCH:
        try:
            f.appended = SideHash(f.fd)
        except OSError:  # (no descriptor to be had: hashed from the blob at its upload)
            f.stop_hashing()
            return
    if f.appended is not None:
        f.appended.wrote(f.in_order)
    if f.staging is not None:
        f.staging.wrote(f.in_order)
    elif stager is not None and off < STAGE_AFTER <= f.in_order:
        f.staging = stager.start(f.fd, f.in_order)
        if f.staging is not None and f.appended is not None:
            f.appended.drop()  # (the upload hashes what it reads: no second reading)
            f.appended = None


def hand_over(f: OpenFile, blob: str, stager: Stager | None, digests: Digests) -> None:
    """The spool was just frozen as `blob`. Written in order to its end, its digest is
    known (a small one's, made from its bytes as they came) or nearly done (by its
    running hash, or its staged upload, which sends the rest): it goes to the flusher
    (`stager` None: a file that never goes to the remote). Otherwise they stop."""
    if stager is not None and f.in_order is not None and f.in_order == os.fstat(f.fd).st_size:
        if f.small is not None:
            digests.learn(blob, f.in_order, f.small.hexdigest())
        elif f.staging is not None:
            stager.bind(f.staging, blob, f.in_order)
            digests.expect(blob, f.staging)
        elif f.appended is not None:
            f.appended.finish_soon()
            digests.expect(blob, f.appended)
        f.appended = f.staging = None  # (handed over: not stopped below)
    f.stop_hashing()
