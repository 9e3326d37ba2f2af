"""Presigned URLs: one method on one path, without the bearer token, until they expire.

Like an object store's signed URLs (Terminal Use hands out such URLs for archive
uploads and downloads, and its SDK fetches them with no Authorization header). The
signature is an HMAC keyed by a hash of the server's token, over method, path and
expiry time, so it can neither be forged nor reused for anything else, and it never
reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, urlencode

EXPIRES = "X-Repomount-Expires"
SIGNATURE = "X-Repomount-Signature"


def _key(token: str | None) -> bytes:
    # Without a token the server is open anyway; the signature then only checks expiry.
    return hashlib.sha256(b"repomount-presign\0" + (token or "").encode()).digest()


def signature(token: str | None, method: str, path: str, expires: int) -> str:
    message = f"{method.upper()}\n{path}\n{expires}".encode()
    return hmac.new(_key(token), message, hashlib.sha256).hexdigest()


def presigned_query(token: str | None, method: str, path: str, expires: int) -> str:
    """The query string that makes `method path` valid until `expires` (Unix seconds)."""
    sig = signature(token, method, path, expires)
    return urlencode({EXPIRES: str(expires), SIGNATURE: sig})


def carries_signature(query_string: bytes) -> bool:
    """Whether a query string holds a signature at all (valid or not)."""
    return SIGNATURE.encode().lower() in query_string.lower()


def verify(
    token: str | None, method: str, path: str, query_string: bytes, *, now: float | None = None
) -> bool:
    """Whether the query string holds a valid, unexpired signature for `method path`."""
    try:
        query = parse_qs(query_string.decode("latin-1"), strict_parsing=False)
        (expires_text,), (given,) = query[EXPIRES], query[SIGNATURE]
    except (KeyError, ValueError):
        return False
    # Only what `presigned_query` writes: ASCII digits and hex. compare_digest raises
    # on a non-ASCII str, and int() would take other digits, "_" and spaces.
    if not (expires_text.isascii() and expires_text.isdigit() and given.isascii()):
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(given.encode(), signature(token, method, path, expires).encode())
