"""The one rule for a token both sides hold: what an HTTP `Authorization` header can
carry. Shared by the client (remotes/credentials.py refuses such a token before any
request) and `repomount serve` (which refuses to start with one no client could send),
so that the two never disagree about a token again."""

from __future__ import annotations


def token_problem(token: str) -> str | None:
    """Why no header can carry `token` as it is, or None: a character outside printable
    ASCII (clients send headers as ASCII; a control character ends the header), or a
    space at either end (HTTP strips it from a header's value; h11 refuses a value that
    ends in one). The token itself is never part of the answer."""
    for char in token:
        if not " " <= char <= "~":
            return "holds a control character" if char.isascii() else "holds a non-ASCII character"
    if token != token.strip(" "):
        return "starts or ends with a space"
    return None
