"""Python file I/O through a real mount; after each step the server holds exactly that."""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.backends import Backend
from support.mount import MountProc
from support.mountfixtures import fresh_repo_name
from support.server import ServerProc
from support.util import sha, wait_until

pytestmark = pytest.mark.backends("native", "relace", "terminaluse", "oxen", "sentry")


def remote_version(server: ServerProc, repo: str, path: str) -> str | None:
    with server.client() as c:
        r = c.head(f"/v1/repos/{repo}/files/{path}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.headers["etag"].strip('"')


def test_create_and_read_back(server: ServerProc, mnt: MountProc) -> None:
    (mnt.path / "hello.txt").write_bytes(b"hello world\n")
    mnt.sync()
    assert server.tree(mnt.repo) == {"hello.txt": b"hello world\n"}
    assert remote_version(server, mnt.repo, "hello.txt") == sha(b"hello world\n")
    assert (mnt.path / "hello.txt").read_bytes() == b"hello world\n"
    assert (mnt.path / "hello.txt").stat().st_size == 12


def test_empty_file_is_created(server: ServerProc, mnt: MountProc) -> None:
    (mnt.path / "empty").touch()
    mnt.sync()
    assert server.tree(mnt.repo) == {"empty": b""}


def test_overwrite_append_random_write_truncate(server: ServerProc, mnt: MountProc) -> None:
    f = mnt.path / "f.bin"
    f.write_bytes(b"0123456789")
    f.write_bytes(b"abc")  # overwrite (O_TRUNC)
    mnt.sync()
    assert server.get(mnt.repo, "f.bin") == b"abc"
    with f.open("ab") as fh:  # append
        fh.write(b"def")
    mnt.sync()
    assert server.get(mnt.repo, "f.bin") == b"abcdef"
    with f.open("r+b") as fh:  # random write inside and past the end
        fh.seek(1)
        fh.write(b"XY")
        fh.seek(10)
        fh.write(b"Z")
    expected = b"aXYdef\0\0\0\0Z"
    mnt.sync()
    assert server.get(mnt.repo, "f.bin") == expected
    assert f.read_bytes() == expected
    os.truncate(f, 4)  # truncate a closed file
    mnt.sync()
    assert server.get(mnt.repo, "f.bin") == b"aXYd"
    with f.open("r+b") as fh:  # ftruncate on an open one, grow then write
        fh.truncate(6)
        fh.seek(0, os.SEEK_END)
        fh.write(b"!")
    mnt.sync()
    assert server.get(mnt.repo, "f.bin") == b"aXYd\0\0!"
    assert remote_version(server, mnt.repo, "f.bin") == sha(b"aXYd\0\0!")


def test_a_read_only_open_with_o_trunc_empties_the_file_as_linux_does(
    server: ServerProc, mnt: MountProc, tmp_path: Path
) -> None:
    """POSIX leaves O_RDONLY|O_TRUNC undefined; Linux empties the file (the caller
    needs write permission), and so does the mount, on every backend."""
    for root in (tmp_path, mnt.path):
        (root / "f").write_bytes(b"0123456789")
        fd = os.open(root / "f", os.O_RDONLY | os.O_TRUNC)
        try:
            assert os.fstat(fd).st_size == 0 and os.read(fd, 10) == b""
            with pytest.raises(OSError) as e:
                os.write(fd, b"x")
            assert e.value.errno == errno.EBADF
        finally:
            os.close(fd)
        assert (root / "f").read_bytes() == b""
    mnt.sync()
    assert server.get(mnt.repo, "f") == b""


def test_existing_remote_file_is_read_and_edited(server: ServerProc, mount_factory) -> None:
    repo = fresh_repo_name("pre")
    server.create_repo(repo)
    server.put(repo, "dir/a.txt", b"line1\nline2\n")
    m = mount_factory(repo, create=False)
    assert (m.path / "dir" / "a.txt").read_text() == "line1\nline2\n"
    with (m.path / "dir" / "a.txt").open("a") as fh:
        fh.write("line3\n")
    m.sync()
    assert server.get(repo, "dir/a.txt") == b"line1\nline2\nline3\n"


def test_rename_and_rename_over(server: ServerProc, mnt: MountProc, backend: Backend) -> None:
    (mnt.path / "a").write_bytes(b"A")
    (mnt.path / "b").write_bytes(b"B")
    if "rename" not in backend.can:
        mnt.sync()  # once the remote has them, there is no way to rename them there
        with pytest.raises(PermissionError):
            os.rename(mnt.path / "a", mnt.path / "c")
        assert sorted(os.listdir(mnt.path)) == ["a", "b"]
        return
    os.rename(mnt.path / "a", mnt.path / "c")
    mnt.sync()
    assert server.tree(mnt.repo) == {"b": b"B", "c": b"A"}
    os.replace(mnt.path / "c", mnt.path / "b")  # over an existing file
    mnt.sync()
    assert server.tree(mnt.repo) == {"b": b"A"}
    assert sorted(os.listdir(mnt.path)) == ["b"]
    assert (mnt.path / "b").read_bytes() == b"A"


RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), ctypes.c_uint(flags)):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(src))


def test_renameat2_flags(mnt: MountProc, backend: Backend) -> None:
    """RENAME_NOREPLACE is honoured; RENAME_EXCHANGE and RENAME_WHITEOUT (overlayfs's,
    root only) are EINVAL, as on a filesystem without them, and rename nothing. Before,
    RENAME_WHITEOUT renamed and left no whiteout: a silent half of what was asked."""
    a, b, c = mnt.path / "a", mnt.path / "b", mnt.path / "c"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    with pytest.raises(FileExistsError):
        renameat2(a, b, RENAME_NOREPLACE)
    refused = [(RENAME_EXCHANGE, b)]  # (to a missing name the kernel says ENOENT itself)
    if os.geteuid() == 0:  # (without CAP_MKNOD the kernel says EPERM to a whiteout first)
        refused += [(RENAME_WHITEOUT, b), (RENAME_WHITEOUT, c)]
    for flags, dst in refused:
        with pytest.raises(OSError) as e:
            renameat2(a, dst, flags)
        assert e.value.errno == errno.EINVAL, (flags, dst.name)
    assert sorted(os.listdir(mnt.path)) == ["a", "b"]
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    if "rename" not in backend.can:  # (Terminal Use: a once it was sent)
        return
    renameat2(a, c, RENAME_NOREPLACE)
    assert sorted(os.listdir(mnt.path)) == ["b", "c"]
    assert c.read_bytes() == b"A"


def test_a_name_no_remote_stores_is_refused_where_it_is_made(
    server: ServerProc, mnt: MountProc, backend: Backend
) -> None:
    """A name with a control character (a newline, a tab, an escape, DEL), or whose
    bytes are not UTF-8, is EINVAL where a program makes it, and nothing is made: the
    server refuses such names on every face, so a change naming one could only be held
    forever (sync would fail).
    A local-only name, which is never sent, may hold one."""
    (mnt.path / "good").write_bytes(b"G")
    makers: list[tuple[str, Callable[[Path], object]]] = [
        ("create", lambda p: p.write_bytes(b"x")),
        ("mkdir", Path.mkdir),
        ("rename to", lambda p: os.rename(mnt.path / "good", p)),
    ]
    if "symlinks" in backend.can:
        makers.append(("symlink", lambda p: os.symlink("good", p)))
    refused = []
    not_utf8 = [os.fsdecode(b) for b in (b"\xff\xfe", b"cut\xc3", b"dir\xff")]
    for name in ("new\nline", "tab\there", "esc\x1b[31m", "del\x7f", *not_utf8):
        for what, make in makers:
            try:
                make(mnt.path / name)
                refused.append(f"{what} {name!r}: made")
            except OSError as e:
                if e.errno != errno.EINVAL:
                    refused.append(f"{what} {name!r}: {errno.errorcode[e.errno]}")
    assert refused == []
    (mnt.path / "#local\nonly#").write_bytes(b"L")  # (local only: "#*#")
    mnt.sync()  # nothing is held
    assert server.tree(mnt.repo) == {"good": b"G"}
    assert sorted(os.listdir(mnt.path)) == ["#local\nonly#", "good"]


def test_a_file_name_the_remote_refuses_is_refused_where_it_is_made(
    server: ServerProc, mnt: MountProc, backend: Backend
) -> None:
    """Sentry refuses a file whose name's last part holds a backslash (400, "special
    whitespace characters"): such a name is EINVAL at create and at a file's rename,
    as a name no remote stores is. Before, the create succeeded and its upload was held
    for ever (sync failed, unmount exited 1). A directory's name may hold one there
    (Sentry checks the last part only); every other backend takes both."""
    (mnt.path / "good").write_bytes(b"G")
    (mnt.path / "dir\\x").mkdir()
    (mnt.path / "dir\\x" / "in").write_bytes(b"I")
    expected = {"good": b"G", "dir\\x/in": b"I"}
    name = "back\\slash.js"
    if backend.name == "sentry":
        makers: list[Callable[[Path], object]] = [
            lambda p: p.write_bytes(b"x"),
            lambda p: os.rename(mnt.path / "good", p),
        ]
        for make in makers:
            with pytest.raises(OSError) as e:
                make(mnt.path / name)
            assert e.value.errno == errno.EINVAL
    else:
        (mnt.path / name).write_bytes(b"B")
        expected[name] = b"B"
    (mnt.path / "#local\\only#").write_bytes(b"L")  # (local only: never sent)
    mnt.sync()  # nothing is held
    assert server.tree(mnt.repo) == expected


def test_atomic_save_pattern(server: ServerProc, mnt: MountProc) -> None:
    (mnt.path / "conf.ini").write_bytes(b"old")
    tmp = mnt.path / ".conf.ini.tmp"
    tmp.write_bytes(b"new")
    os.replace(tmp, mnt.path / "conf.ini")
    mnt.sync()
    assert server.tree(mnt.repo) == {"conf.ini": b"new"}


def test_mkdir_rmdir_and_directory_rename(
    server: ServerProc, mnt: MountProc, backend: Backend
) -> None:
    (mnt.path / "d1" / "sub").mkdir(parents=True)
    (mnt.path / "d1" / "sub" / "x.txt").write_bytes(b"x")
    (mnt.path / "empty").mkdir()
    mnt.sync()
    with server.client() as c:
        tree = c.get(f"/v1/repos/{mnt.repo}/tree", params={"recursive": 1}).json()
    kinds = {e["path"]: e["type"] for e in tree["entries"]}
    expected = {"d1": "dir", "d1/sub": "dir", "d1/sub/x.txt": "file", "empty": "dir"}
    if "empty_dirs" not in backend.can:  # the empty one lives here until it has a file
        del expected["empty"]
        assert (mnt.path / "empty").is_dir()
    assert kinds == expected
    if "dir_rename" not in backend.can:
        with pytest.raises(PermissionError):
            os.rename(mnt.path / "d1", mnt.path / "d2")
        os.rmdir(mnt.path / "empty")
        return
    os.rename(mnt.path / "d1", mnt.path / "d2")
    mnt.sync()
    assert server.tree(mnt.repo) == {"d2/sub/x.txt": b"x"}
    assert (mnt.path / "d2" / "sub" / "x.txt").read_bytes() == b"x"
    with pytest.raises(OSError) as e:
        os.rmdir(mnt.path / "d2")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(mnt.path / "empty")
    mnt.sync()
    with server.client() as c:
        tree = c.get(f"/v1/repos/{mnt.repo}/tree", params={"recursive": 1}).json()
    assert "empty" not in {e["path"] for e in tree["entries"]}


def test_unlink(server: ServerProc, mnt: MountProc, backend: Backend) -> None:
    (mnt.path / "gone.txt").write_bytes(b"bye")
    if "delete" not in backend.can:
        mnt.sync()
        with pytest.raises(PermissionError):
            os.unlink(mnt.path / "gone.txt")
        assert server.tree(mnt.repo) == {"gone.txt": b"bye"}
        return
    os.unlink(mnt.path / "gone.txt")
    mnt.sync()
    assert server.tree(mnt.repo) == {}
    assert not (mnt.path / "gone.txt").exists()
    with pytest.raises(FileNotFoundError):
        os.unlink(mnt.path / "gone.txt")


def test_unlink_while_open_keeps_the_open_file_readable(
    server: ServerProc, mnt: MountProc, backend: Backend
) -> None:
    (mnt.path / "f").write_bytes(b"content")
    with (mnt.path / "f").open("rb") as fh:
        if "delete" not in backend.can:
            mnt.sync()
            with pytest.raises(PermissionError):
                os.unlink(mnt.path / "f")
            assert fh.read() == b"content"
            return
        os.unlink(mnt.path / "f")
        assert fh.read() == b"content"
    mnt.sync()
    assert server.tree(mnt.repo) == {}


def test_listdir_of_1000_entries(server: ServerProc, mount_factory) -> None:
    repo = fresh_repo_name("big")
    server.create_repo(repo)
    with server.client() as c:
        ops = [
            {"op": "write", "path": f"many/f{i:04}.txt", "content_b64": "eA=="} for i in range(1000)
        ]
        c.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    m = mount_factory(repo, create=False)
    names = os.listdir(m.path / "many")
    assert sorted(names) == [f"f{i:04}.txt" for i in range(1000)]
    assert (m.path / "many" / "f0999.txt").read_bytes() == b"x"


class _Dirent(ctypes.Structure):
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.restype = ctypes.POINTER(_Dirent)
for _f in ("readdir", "rewinddir", "closedir"):
    getattr(_libc, _f).argtypes = [ctypes.c_void_p]


def _entries(stream: int) -> list[str]:
    names = []
    while entry := _libc.readdir(stream):
        names.append(entry.contents.d_name.decode())
    return sorted(set(names) - {".", ".."})


def _read_rewind_read(d: Path) -> list[list[str]]:
    """opendir; read all; make, remove and rename names; rewinddir; read all."""
    for name in ("a", "b", "c"):
        (d / name).write_bytes(b"x")
    stream = _libc.opendir(os.fsencode(d))
    try:
        first = _entries(stream)
        (d / "new").write_bytes(b"n")
        (d / "a").unlink()
        os.rename(d / "b", d / "b2")
        _libc.rewinddir(stream)
        return [first, _entries(stream)]
    finally:
        _libc.closedir(stream)


def test_rewinddir_shows_the_directory_as_it_is_now(mnt: MountProc, tmp_path: Path) -> None:
    """POSIX: rewinddir makes the stream show the directory's current state, as a new
    opendir would (`ls` in a loop over one stream, an `rm -r` that rewinds until the
    directory is empty). Before, it went on showing the snapshot taken at opendir, less
    the names removed since: a name made meanwhile never showed."""
    (mnt.path / "d").mkdir()
    (tmp_path / "d").mkdir()
    expected = _read_rewind_read(tmp_path / "d")
    assert expected == [["a", "b", "c"], ["b2", "c", "new"]]  # (ext4)
    assert _read_rewind_read(mnt.path / "d") == expected


def test_exclusive_create_of_existing_file_fails(mnt: MountProc) -> None:
    (mnt.path / "lock").write_bytes(b"1")
    with pytest.raises(FileExistsError):
        os.open(mnt.path / "lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def test_statfs_and_stat(mnt: MountProc) -> None:
    st = os.statvfs(mnt.path)
    assert st.f_namemax == 255 and st.f_bavail > 0
    (mnt.path / "x").write_bytes(b"12345")
    s = (mnt.path / "x").stat()
    assert s.st_size == 5 and s.st_uid == os.getuid()


def test_many_files_written_and_read_back(server: ServerProc, mnt: MountProc) -> None:
    files = {f"d{i % 5}/file{i}.txt": f"content {i}\n".encode() * (i + 1) for i in range(60)}
    for rel, data in files.items():
        p = mnt.path / rel
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
    mnt.sync()
    assert server.tree(mnt.repo) == files
    for rel, data in files.items():
        assert (mnt.path / rel).read_bytes() == data


def test_remote_content_appears_after_ttl(server: ServerProc, mount_factory) -> None:
    m = mount_factory(extra_args=["--metadata-ttl", "0.5"])
    (m.path / "f").write_bytes(b"mine")
    server.put(m.repo, "f", b"theirs, longer")
    server.put(m.repo, "new", b"n")

    def shown() -> bool:
        try:
            return (m.path / "f").read_bytes() == b"theirs, longer" and (m.path / "new").exists()
        except FileNotFoundError:  # our "mine" conflicts with "theirs": keep-both settles it
            return False

    wait_until(shown, 10, "the remote's f and new to show after the TTL")
    assert (m.path / "f").read_bytes() == b"theirs, longer"
    assert (m.path / "new").read_bytes() == b"n"


def test_a_binary_file_written_here_stays_when_listings_are_fetched_again(
    server: ServerProc, mount_factory
) -> None:
    """Relace's clone lists UTF-8 text files only: a binary file written through the
    mount, once uploaded, must not vanish from the mount when the listing is fetched
    again and leaves it out (it did: ENOENT, the file on the server), nor a directory
    that holds only such files."""
    m = mount_factory(extra_args=["--metadata-ttl", "0.5", "--poll-interval", "0.5"])
    data = bytes(range(256)) * 16 + b"\xff\xfe"
    os.listdir(m.path)  # (the root listed first, as a shell's prompt would)
    m.sync()
    (m.path / "docs").mkdir()
    (m.path / "docs" / "a.txt").write_bytes(b"text\n")
    m.sync()
    (m.path / "logo.png").write_bytes(data)
    (m.path / "docs" / "pic.png").write_bytes(data)
    (m.path / "docs" / "img").mkdir()
    (m.path / "docs" / "img" / "only.png").write_bytes(data)
    m.sync()
    assert server.tree(m.repo) == {
        "docs/a.txt": b"text\n",
        "logo.png": data,
        "docs/pic.png": data,
        "docs/img/only.png": data,
    }
    for _ in range(3):  # each past the TTL and a poll: the listings are fetched again
        time.sleep(1.2)
        assert sorted(os.listdir(m.path)) == ["docs", "logo.png"]
        assert sorted(os.listdir(m.path / "docs")) == ["a.txt", "img", "pic.png"]
        assert os.listdir(m.path / "docs" / "img") == ["only.png"]
        assert (m.path / "logo.png").read_bytes() == data
        assert (m.path / "docs" / "img" / "only.png").read_bytes() == data


def test_binary_files_move_with_their_directory_and_a_text_file_may_become_binary(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    """On every backend; for Relace, whose clone leaves binary files out, two probe
    findings: a directory rename left its binary files at the old path on the server
    (the rename went file by file from the clone) while sync said all was uploaded; a
    listed text file rewritten with binary content vanished at the next listing."""
    m = mount_factory(extra_args=["--metadata-ttl", "0.5", "--poll-interval", "0.5"])
    data = b"\xff\x00bin" * 100
    (m.path / "b").mkdir()
    (m.path / "b" / "bin").write_bytes(data)
    (m.path / "b" / "t").write_bytes(b"t\n")
    (m.path / "f").write_bytes(b"text\n")
    m.sync()
    time.sleep(1.2)  # (f listed again: shown by a listing)
    assert sorted(os.listdir(m.path)) == ["b", "f"]
    if "rename" in backend.can:
        os.rename(m.path / "b", m.path / "a")
        moved = "a"
    else:
        moved = "b"  # (Terminal Use refuses it: tested elsewhere)
    (m.path / "f").write_bytes(b"\xff\xfe now binary")
    m.sync()
    expected = {f"{moved}/bin": data, f"{moved}/t": b"t\n", "f": b"\xff\xfe now binary"}
    assert server.tree(m.repo) == expected
    for _ in range(2):  # each past the TTL and a poll: the listings are fetched again
        time.sleep(1.2)
        assert sorted(os.listdir(m.path)) == [moved, "f"]
        assert (m.path / moved / "bin").read_bytes() == data
        assert (m.path / "f").read_bytes() == b"\xff\xfe now binary"
    with (m.path / moved / "bin").open("ab") as fh:
        fh.write(b"!")
    m.sync()
    assert server.tree(m.repo) == expected | {f"{moved}/bin": data + b"!"}


@pytest.mark.backends("native", "relace", "oxen")
def test_a_directory_rename_that_takes_a_path_below_past_4096_bytes_is_enametoolong(
    server: ServerProc, mnt: MountProc
) -> None:
    """A rename of a directory is ENAMETOOLONG when a path below it would become longer
    than 4096 bytes, and nothing changes. Before, it succeeded: the remote took the
    paths, every listing left them out, and after a remount the file was gone from
    every mount (with the server keeping it where nothing could reach it)."""
    levels = ["d" * 200] * 20
    # Relative to the mount's root: with the mount point in front, the paths would be
    # longer than the kernel's PATH_MAX (4096) for the syscalls themselves.
    root = os.open(mnt.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth in range(len(levels) + 1):
            os.mkdir("/".join(["top", *levels[:depth]]), dir_fd=root)
        name = "/".join(["top", *levels, "f"])  # "top" + 20 * 201 + "/f": 4025 bytes
        fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=root)
        os.write(fd, b"deep")
        os.close(fd)
    finally:
        os.close(root)
    mnt.sync()
    assert server.tree(mnt.repo) == {"/".join(["top", *levels, "f"]): b"deep"}
    (mnt.path / "new").mkdir()
    for longer in ("t" * 100, "new/" + "n" * 71):  # 4122, 4097 bytes
        with pytest.raises(OSError) as e:
            os.rename(mnt.path / "top", mnt.path / longer)
        assert e.value.errno == errno.ENAMETOOLONG
    assert sorted(os.listdir(mnt.path)) == ["new", "top"]
    os.rename(mnt.path / "top", mnt.path / "new" / ("t" * 70))  # (fits: 4096 bytes)
    mnt.sync()
    moved = "/".join(["new", "t" * 70, *levels, "f"])
    assert len(moved.encode()) == 4096
    assert server.tree(mnt.repo) == {moved: b"deep"}
    top = os.open(mnt.path / "new" / ("t" * 70), os.O_RDONLY | os.O_DIRECTORY)
    try:  # (relative to it: the whole path is longer than the kernel's PATH_MAX)
        fd = os.open("/".join([*levels, "f"]), os.O_RDONLY, dir_fd=top)
    finally:
        os.close(top)
    with os.fdopen(fd, "rb") as f:
        assert f.read() == b"deep"
