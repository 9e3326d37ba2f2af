"""Contents that came inside a request (native inline writes, Relace file texts, Oxen
uploads) stored as blobs, from a worker thread.

A small content (up to SMALL_BLOB_MAX) is spooled in memory and stored as a row of the
database (server/smallblobs.py: one transaction per group, no file). A larger one is
written to its own spool file, which is closed once filled: a batch of thousands holds
one descriptor (and one write buffer, of the content's size) at a time, not one per
content, so concurrent batches cannot run the server out of descriptors. The spools
are moved into the store in groups of up to GROUP_MEMBERS contents or GROUP_BYTES
bytes, each made durable together (two syncfs for files, see blobs.py): nothing
overlaps here with storing a group, so larger groups than a pack's cost no wait and
fewer syncs, while the spools on disk stay bounded (and the contents are in memory
already).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from repomount.server.store import BlobSpool, Store

GROUP_MEMBERS = 1024
GROUP_BYTES = 32 << 20


def store_contents(store: Store, contents: Iterable[bytes]) -> list[str]:
    """Store each content as a blob; their SHA-256s, in order."""
    shas: list[str] = []

    def spools() -> Iterator[BlobSpool]:
        for content in contents:
            spool = store.new_spool(len(content))
            try:
                spool.write(content)
                spool.close()
            except BaseException:
                store.discard_spool(spool)
                raise
            shas.append(spool.sha256)
            yield spool

    store_in_groups(store, spools())
    return shas


def store_in_groups(store: Store, spools: Iterable[BlobSpool]) -> None:
    """Move closed spools into the store in groups of up to GROUP_MEMBERS contents or
    GROUP_BYTES bytes; if anything fails, those of the group not stored are discarded
    (a spool being made when it failed is its maker's to discard)."""
    group: list[BlobSpool] = []
    group_bytes = 0
    try:
        for spool in spools:
            group.append(spool)
            group_bytes += spool.size
            if len(group) >= GROUP_MEMBERS or group_bytes >= GROUP_BYTES:
                store.add_blobs(group)
                group, group_bytes = [], 0
        if group:
            store.add_blobs(group)
            group = []
    except BaseException:
        for spool in group:
            store.discard_spool(spool)
        raise
