"""Terminal Use archives (tar.zst) with hostile headers: refused quickly, in bounded
memory, with a short answer.

The security probe: a 30 KB tar.zst declaring a 1e9-byte pax header took 4-8 GB of the
server's memory (stdlib tarfile reads pax and GNU long-name headers whole), and the
400 for a long GNU name echoed it whole (400 MB for a 200 MB name). The archive is now
read by tarread, which refuses a member's extended headers past 1 MiB from their
declared size; names quoted in an answer are cut short.
"""

from __future__ import annotations

import io
import re
import tarfile

import pytest
import zstandard

from support.server import ServerProc
from support.tusync import sync_up

DECLARED = 10**8  # bytes of one extended header: compressed, about 3 KB
GROWTH_LIMIT_KIB = 48 << 10  # the old server grew by several times DECLARED


def header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(tarfile.GNU_FORMAT)


def hostile(kind: bytes, size: int = DECLARED) -> bytes:
    """A tar.zst whose one member's extended header ('x' pax, 'L' or 'K' GNU) holds
    `size` bytes (of a long name, or of a pax `path` or `comment`), then a file."""
    zstd = zstandard.ZstdCompressor(level=1).compressobj()
    out = [zstd.compress(header("././@LongLink", size, kind[:1]))]
    filler = size
    if kind[:1] == b"x":
        key = b" path=" if kind == b"x-path" else b" comment="
        prefix = b"%d%s" % (size, key)
        out.append(zstd.compress(prefix))
        filler -= len(prefix) + 1
    piece = b"a" * (1 << 20)
    while filler > 0:
        out.append(zstd.compress(piece[:filler]))
        filler -= len(piece)
    if kind[:1] == b"x":
        out.append(zstd.compress(b"\n"))
    out.append(zstd.compress(b"\0" * (-size % 512)))
    out.append(zstd.compress(header("f.txt", 2, b"0") + b"hi".ljust(512, b"\0") + bytes(1024)))
    return b"".join(out) + zstd.flush()


def test_huge_extended_headers_are_refused_small_and_in_bounded_memory(
    server: ServerProc,
) -> None:
    with server.client() as c:
        sync_up(c, hostile(b"x-comment", 1000))  # (a first sync: the server warmed up)
        before = server.rss_peak_kib()
        for kind in (b"x-path", b"x-comment", b"L", b"K"):
            archive = hostile(kind)
            assert len(archive) < 64 << 10
            fs_id, r = sync_up(c, archive)
            assert r.status_code == 400, (kind, r.text[:300])
            assert "extended headers of over" in r.text and len(r.content) < 1000, r.text[:300]
            assert c.get(f"/v1/repos/{fs_id}").json()["head"] == "0"
    growth = server.rss_peak_kib() - before
    assert growth < GROWTH_LIMIT_KIB, f"the server's peak RSS grew by {growth} KiB"


@pytest.mark.parametrize("kind", [b"x-path", b"L"])
def test_a_bad_long_name_is_quoted_cut_short(live: ServerProc, kind: bytes) -> None:
    """A name under the bound but not a valid path (a 300 KB name) is 400, and the
    answer quotes only its beginning."""
    with live.client() as c:
        _, r = sync_up(c, hostile(kind, 300_000))
    assert r.status_code == 400 and "invalid path 'aaaa" in r.text, r.text[:300]
    assert re.search(r"\.\.\. \(\d{6} characters\)", r.text), r.text
    assert len(r.content) < 1000


def test_gnu_long_names_still_sync(live: ServerProc) -> None:
    """GNU tar's own format (its default) spells names over 100 bytes as 'L' headers."""
    name = "deep/" * 30 + "file.txt"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with live.client() as c:
        fs_id, r = sync_up(c, zstandard.ZstdCompressor().compress(raw.getvalue()))
        assert r.status_code == 200, r.text
    assert live.tree(fs_id) == {name: b"hello"}
