"""Credentials as the HTTP client holds them: a token that never shows itself, the
header it goes in, and the check that it is one a header can carry."""

from __future__ import annotations

from collections.abc import Callable


class Secret:
    """A credential that never shows itself in a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


AuthScheme = Callable[[str], dict[str, str]]


def bearer_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def check_token(token: str) -> None:
    """ValueError, one line that never repeats the token, for a token that no HTTP
    header can carry: anything but printable ASCII (a pasted newline, a non-ASCII
    character), or whitespace around it (h11 refuses a header value that ends in it;
    one before it would be taken as part of the token). Such a token failed each
    request as it went out (a traceback, or "cannot reach" the server), instead of
    once, saying why."""
    for char in token:
        if not " " <= char <= "~":
            what = "a control character" if char.isascii() else "a non-ASCII character"
            raise ValueError(
                f"the token holds {what}, which an HTTP header cannot carry "
                "(a token is printable ASCII: check its environment variable or config)"
            )
    if token != token.strip(" "):
        raise ValueError(
            "the token starts or ends with a space, which an HTTP header cannot carry"
            " (check its environment variable or config)"
        )
