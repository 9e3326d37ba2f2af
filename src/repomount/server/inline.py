"""Contents that came inside a request (native inline writes, Relace file texts) stored
as blobs, from a worker thread.

Each content is written to its own spool file, which is closed once filled: a batch of
thousands holds one descriptor (and one write buffer) at a time, not one per content,
so concurrent batches cannot run the server out of descriptors. The closed spools are
moved into the blob store GROUP at a time, each group made durable together.
"""

from __future__ import annotations

from collections.abc import Iterable

from repomount.server.store import BlobSpool, Store

GROUP = 64


def store_contents(store: Store, contents: Iterable[bytes]) -> list[str]:
    """Store each content as a blob; their SHA-256s, in order."""
    shas: list[str] = []
    group: list[BlobSpool] = []
    try:
        for content in contents:
            spool = store.new_spool()
            group.append(spool)
            spool.write(content)
            spool.close()
            shas.append(spool.sha256)
            if len(group) >= GROUP:
                store.add_blobs(group)
                group = []
        if group:
            store.add_blobs(group)
            group = []
    except BaseException:
        for spool in group:
            store.discard_spool(spool)
        raise
    return shas
