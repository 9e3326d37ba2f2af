"""The streaming tar reader (repomount/tarread.py) against what Python's tarfile and the
server's own writer produce, fed in chunks of every awkward size. No I/O."""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import AsyncIterator

import pytest

from repomount import tarwrite
from repomount.tarread import MAX_PAX, FileTarReader, Member, TarError, TarReader, parse_pax


async def feed(data: bytes, sizes: list[int] | None = None) -> AsyncIterator[bytes]:
    """`data` in chunks of these sizes in turn (empty chunks included), or in one."""
    pos = 0
    turn = 0
    while pos < len(data):
        size = sizes[turn % len(sizes)] if sizes else len(data)
        turn += 1
        yield data[pos : pos + size]
        pos += size
    yield b""


def make_tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT, **pax: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = dict(pax)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def read_all(
    stream: AsyncIterator[bytes], *, read_content: bool = True
) -> list[tuple[Member, bytes]]:
    reader = TarReader(stream)
    found = []
    while (member := await reader.next()) is not None:
        content = b"".join([c async for c in reader.chunks(1000)]) if read_content else b""
        found.append((member, content))
    assert await reader.next() is None  # and it stays ended
    return found


MEMBERS = [
    ("a.txt", b"A" * 3),
    ("empty", b""),
    ("exact", b"x" * 512),
    ("big.bin", bytes(range(256)) * 41),
    ("deep/" + "n" * 150 + "/long.txt", b"long name"),
    ("ünï/cödé.txt", "ü".encode() * 700),
]


FORMATS = [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]


@pytest.mark.parametrize("fmt", FORMATS, ids=["ustar", "pax", "gnu"])
@pytest.mark.parametrize("sizes", [None, [1], [7, 512, 0, 1000], [511, 513], [4096]])
async def test_round_trip_in_any_chunking(fmt: int, sizes: list[int] | None) -> None:
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else MEMBERS[:4]  # ustar: ASCII, short
    data = make_tar(members, fmt)
    found = await read_all(feed(data, sizes))
    assert [(m.name, c) for m, c in found] == members
    assert all(m.is_file and m.size == len(c) for m, c in found)


async def test_unread_content_is_skipped() -> None:
    data = make_tar(MEMBERS)
    found = await read_all(feed(data, [300]), read_content=False)
    assert [m.name for m, _ in found] == [name for name, _ in MEMBERS]


async def test_pax_records_are_kept_and_path_size_applied() -> None:
    data = make_tar([("f", b"1234")], **{"repomount.version": "abc", "comment": "x y=z"})
    ((member, content),) = await read_all(feed(data, [100]))
    assert member.pax == {"repomount.version": "abc", "comment": "x y=z"}
    assert (member.name, content) == ("f", b"1234")


async def test_the_servers_read_stream() -> None:
    """What POST /read sends: pax members with a version, a symlink, MISSING."""
    target = "t/" * 80 + "end"
    parts = [
        tarwrite.member_header("a", 2, mtime=1, mode=0o644, pax={tarwrite.VERSION_KEY: "v1"}),
        b"hi" + tarwrite.padding(2),
        tarwrite.symlink_header("l", target, mtime=1, mode=0o777, pax={"repomount.version": "v2"}),
        tarwrite.member_header(tarwrite.MISSING_NAME, 2, mtime=0, mode=0o644),
        b"[]" + tarwrite.padding(2),
        tarwrite.END_OF_ARCHIVE,
    ]
    found = await read_all(feed(b"".join(parts), [100]))
    (a, hi), (link, nothing), (missing, listing) = found
    assert (a.name, a.pax, hi, a.is_file) == ("a", {"repomount.version": "v1"}, b"hi", True)
    assert (link.is_symlink, link.linkname, link.pax, nothing) == (
        True,
        target,
        {"repomount.version": "v2"},
        b"",
    )
    assert (missing.name, missing.pax, listing) == ("MISSING", {}, b"[]")


async def test_global_headers_are_skipped_and_other_types_reported() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.pax_headers = {"comment": "global"}
        info = tarfile.TarInfo("dir")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        info = tarfile.TarInfo("dir/f")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    found = await read_all(feed(buf.getvalue(), [64]))
    assert [(m.name, m.type, m.pax) for m, _ in found] == [
        ("dir/", b"5", {}),
        ("dir/f", b"0", {}),
    ]


async def test_base256_size() -> None:
    header = bytearray(tarfile.TarInfo("n").tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"\x80" + (3).to_bytes(11, "big")
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    data = bytes(header) + b"abc" + b"\0" * 509 + b"\0" * 1024
    ((member, content),) = await read_all(feed(data))
    assert (member.size, content) == (3, b"abc")


@pytest.mark.parametrize("cut", [0, 100, 512, 515, 1024, 1536], ids=lambda n: f"cut-at-{n}")
async def test_a_stream_cut_short_is_an_error(cut: int) -> None:
    data = make_tar([("a", b"x" * 600)], tarfile.USTAR_FORMAT)  # header, 2 blocks, end
    assert len(data) >= 2048
    if cut == 0:
        with pytest.raises(TarError, match="ends inside a header"):
            await read_all(feed(b""))
        return
    with pytest.raises(TarError, match="stream ends inside"):
        await read_all(feed(data[:cut], [100]))


async def test_garbage_and_bad_checksums_are_errors() -> None:
    with pytest.raises(TarError, match="checksum"):
        await read_all(feed(b"not a tar at all".ljust(1024, b"!")))
    data = bytearray(make_tar([("a", b"x")], tarfile.USTAR_FORMAT))
    data[0] = ord("b")  # the name changed, the checksum not
    with pytest.raises(TarError, match="checksum"):
        await read_all(feed(bytes(data)))
    lone = make_tar([("a", b"x")], tarfile.USTAR_FORMAT)[:1024] + b"\0" * 512 + b"junk" * 128
    with pytest.raises(TarError, match="single zero block"):
        await read_all(feed(lone))


async def test_a_header_summed_as_signed_bytes_is_accepted() -> None:
    """Old writers summed a header's bytes as signed chars; a name with bytes above 127
    then has a checksum 256 less per such byte."""
    name = "caf\u00e9.txt"  # (UTF-8: two bytes above 127)
    data = bytearray(make_tar([(name, b"x")], tarfile.GNU_FORMAT))
    header = bytes(data[:512])
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for b in header if b > 127)
    assert signed != unsigned
    data[148:156] = b"%06o\0 " % signed
    [(member, content)] = await read_all(feed(bytes(data)))
    assert member.name == name and content == b"x"


def test_pax_records() -> None:
    assert parse_pax(b"12 path=a/b\n11 size=42\n") == {"path": "a/b", "size": "42"}
    for bad in (b"x path=a\n", b"99 path=a\n", b"9 path=a!", b"9 pathxa\n"):
        with pytest.raises(TarError):
            parse_pax(bad)


async def test_random_members_random_chunks() -> None:
    rng = random.Random(7)
    members = [
        (f"m{i}", rng.randbytes(rng.choice([0, 1, 511, 512, 513, rng.randrange(5000)])))
        for i in range(40)
    ]
    data = make_tar(members)
    sizes = [rng.randrange(1, 2000) for _ in range(50)]
    found = await read_all(feed(data, sizes))
    assert [(m.name, c) for m, c in found] == members


def extended_header(kind: bytes, size: int) -> bytes:
    """A header block of an extended header (pax 'x' or 'g', GNU 'L' or 'K') declaring
    `size` bytes, which do not follow: a reader must refuse it from the header alone."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"K"])
async def test_an_extended_header_over_the_bound_is_refused_before_it_is_read(
    kind: bytes,
) -> None:
    """The security probe: a 30 KB tar.zst declaring a 1 GB pax header took GBs (tarfile
    reads it whole). The stream below holds only the header block."""
    with pytest.raises(TarError, match="extended headers of over") as refused:
        await read_all(feed(extended_header(kind, 10**9)))
    assert len(str(refused.value)) < 200


async def test_the_bound_is_on_all_of_a_members_extended_headers() -> None:
    """Many headers, each under the bound, before one member add up (each one's records
    are kept until the member)."""
    body = b" comment=" + b"a" * (MAX_PAX // 2) + b"\n"
    record = b"%d" % (len(body) + 6) + body  # (its length has 6 digits)
    assert parse_pax(record)["comment"] == "a" * (MAX_PAX // 2)
    one = tarfile.TarInfo("p")
    one.type, one.size = tarfile.XHDTYPE, len(record)
    block = one.tobuf(tarfile.USTAR_FORMAT) + record + b"\0" * (-len(record) % 512)
    with pytest.raises(TarError, match="extended headers of over"):
        await read_all(feed(block * 3 + make_tar([("f", b"x")], tarfile.USTAR_FORMAT)))


async def test_gnu_long_names_and_link_names() -> None:
    name, target = "d/" * 90 + "file", "t/" * 90 + "target"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("l" * 120)
        link.type, link.linkname = tarfile.SYMTYPE, target
        tar.addfile(link)
    found = await read_all(feed(buf.getvalue(), [100]))
    assert [(m.name, m.linkname, c) for m, c in found] == [
        (name, "", b"hi"),
        ("l" * 120, target, b""),
    ]


def test_the_file_reader_reads_a_blocking_file_without_an_event_loop() -> None:
    reader = FileTarReader(io.BytesIO(make_tar(MEMBERS)), chunk=300)
    found = []
    while (member := reader.next()) is not None:
        found.append((member.name, b"".join(iter(lambda: reader.read(1000), b""))))
    assert found == MEMBERS
    with pytest.raises(TarError, match="extended headers of over"):
        FileTarReader(io.BytesIO(extended_header(b"x", 10**9))).next()


@pytest.mark.parametrize("sizes", [None, [1], [600, 7]])
async def test_finish_consumes_what_follows_the_end(sizes: list[int] | None) -> None:
    """After the end-of-archive blocks the rest of the stream (tar's record padding) is
    read and ignored, up to a bound: an HTTP body read to its end frees its connection."""
    data = make_tar([("a", b"x" * 700)])  # (tarfile pads to 10 KiB records)
    consumed = []

    async def tracked() -> AsyncIterator[bytes]:
        async for chunk in feed(data, sizes):
            yield chunk
        consumed.append(True)

    reader = TarReader(tracked())
    assert (await reader.next()) is not None
    assert (await reader.next()) is None
    assert len(data) > 4 * 512  # (padding follows the two zero blocks)
    assert await reader.finish(len(data))
    assert consumed == [True]  # the stream was read to its end

    reader = TarReader(feed(data, sizes))
    while await reader.next() is not None:
        pass
    assert not await reader.finish(1000)  # more than that follows: given up
