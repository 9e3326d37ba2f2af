"""Repository path rules, shared by the client and the server.

A repository path is relative and `/`-separated: no leading or trailing slash, no empty,
`.` or `..` components, no NUL, every name at most 255 bytes and the whole path at most
4096 bytes in UTF-8. These are the limits of a Linux filesystem, so anything that can
exist in a repository can exist in a mount. Pure stdlib on purpose: the server imports it.
"""

from __future__ import annotations

import re

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
SHOWN_CHARS = 200  # of a name quoted in a message


def shown(text: str, most: int = SHOWN_CHARS) -> str:
    """`text` quoted for a message, cut after `most` characters: a name that came in a
    request (or an archive) can be as long as it, and a message must not echo it whole."""
    if len(text) <= most:
        return repr(text)
    return f"{text[:most]!r}... ({len(text)} characters)"


class InvalidPathError(ValueError):
    """A path that breaks the repository path rules; the message says which rule."""

    def __init__(self, path: str, reason: str, *, too_long: bool = False) -> None:
        super().__init__(f"invalid path {shown(path)}: {reason}")
        self.path = path
        self.reason = reason
        self.too_long = too_long  # a length limit, not a bad character or component


def validate_path(path: str) -> str:
    """Return `path` unchanged if it is a valid repository path, else raise InvalidPathError."""
    if not isinstance(path, str):
        raise InvalidPathError(repr(path), "a path must be a string")
    if _plainly_valid(path):  # (the usual case: a listing checks thousands)
        return path
    return _check_rules(path)


def _check_rules(path: str) -> str:
    """Every rule, in full, saying which one `path` breaks."""
    if path == "":
        raise InvalidPathError(path, "the path is empty")
    if "\x00" in path:
        raise InvalidPathError(path, "contains a NUL character")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPathError(path, "is not valid UTF-8") from None
    if path.startswith("/"):
        raise InvalidPathError(path, "must be relative (no leading '/')")
    if size > MAX_PATH_BYTES:
        raise InvalidPathError(
            path, f"is {size} bytes long, the limit is {MAX_PATH_BYTES}", too_long=True
        )
    for name in path.split("/"):
        if name == "":
            raise InvalidPathError(path, "has an empty component ('//' or a trailing '/')")
        if name in (".", ".."):
            raise InvalidPathError(path, f"has a {name!r} component")
        name_size = len(name.encode("utf-8"))
        if name_size > MAX_NAME_BYTES:
            raise InvalidPathError(
                path,
                f"has a {name_size}-byte name, the limit is {MAX_NAME_BYTES}",
                too_long=True,
            )
    return path


# A name of 1 to 255 characters, no "/" or NUL, not "." or "..": for an ASCII path,
# whose characters are its bytes, the whole rule set in one C-speed match.
_NAME = r"(?!\.\.?(?:/|\Z))[^/\x00]{1,255}"
_PLAIN_PATH = re.compile(rf"{_NAME}(?:/{_NAME})*")


def _plainly_valid(path: str) -> bool:
    """True for an ASCII path that keeps every rule; False means "look closer", not
    "invalid"."""
    return path.isascii() and len(path) <= MAX_PATH_BYTES and bool(_PLAIN_PATH.fullmatch(path))


# Names written may hold no control character (0x00-0x1f, 0x7f): a newline or a terminal
# escape in a name breaks URL routes and every listing a person reads. repomount's server
# refuses them on every face; a mount refuses to make them (EINVAL) rather than hold a
# change that can never go. Names already stored may still be read and deleted.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_character_problem(name: str) -> str | None:
    """Why `name` may not be written (it holds a control character), or None."""
    found = _CONTROL.search(name)
    if found is None:
        return None
    return f"holds the control character U+{ord(found[0]):04X} (names may hold none)"


def joined(directory: str, name: str) -> str:
    """The path of `name` in `directory` (the root is `""`)."""
    return f"{directory}/{name}" if directory else name


def parent_of(path: str) -> str:
    """The parent directory of a valid path; the root is `""`."""
    head, _, _ = path.rpartition("/")
    return head


def at_or_under(path: str, top: str) -> bool:
    """Whether `path` is `top` or lies below it."""
    return path == top or path.startswith(top + "/")


def ancestors_of(path: str) -> list[str]:
    """Every proper ancestor directory of a valid path, outermost first, root excluded."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]
