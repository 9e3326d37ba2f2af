"""Credentials as the HTTP client holds them: a token that never shows itself, the
header it goes in, and the check that it is one a header can carry."""

from __future__ import annotations

from collections.abc import Callable

from repomount.headertoken import token_problem


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
    header can carry (headertoken.py). Such a token failed each request as it went out
    (a traceback, or "cannot reach" the server), instead of once, saying why."""
    if problem := token_problem(token):
        raise ValueError(
            f"the token {problem}, which an HTTP header cannot carry (a token is printable"
            " ASCII, no space at either end: check its environment variable or config)"
        )
