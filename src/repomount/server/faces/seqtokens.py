"""Tokens that name a store head without a table: Oxen's commit ids, Relace's head
tokens. 16 hex digits hold the head, scrambled per scope (a repository) by an
invertible map modulo 2**64, so heads do not look sequential; the digits after them
check that the token is this scope's. A token is a pure function of (scope, head): one
given out before a restart names the same head after it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_M64 = 1 << 64


@dataclass(frozen=True)
class SeqTokens:
    label: bytes  # the scramble's key, per face
    check_bytes: int  # bytes of the check digest after the head (twice as many digits)

    def token(self, scope: str, seq: int) -> str:
        mul, mask = self._scramble(scope)
        check = _digest(b"check", scope, str(seq))[: self.check_bytes]
        return f"{(seq * mul % _M64) ^ mask:016x}" + check.hex()

    def seq(self, scope: str, token: str) -> int | None:
        """The head `token` names in `scope`, or None when it is not one of its tokens."""
        if len(token) != 16 + 2 * self.check_bytes:
            return None
        try:
            scrambled = int(token[:16], 16)
        except ValueError:
            return None
        mul, mask = self._scramble(scope)
        seq = (scrambled ^ mask) * pow(mul, -1, _M64) % _M64
        return seq if self.token(scope, seq) == token.lower() else None

    def _scramble(self, scope: str) -> tuple[int, int]:
        """An odd multiplier (invertible modulo 2**64) and a mask, both per scope."""
        key = _digest(self.label, scope)
        return int.from_bytes(key[:8], "big") | 1, int.from_bytes(key[8:16], "big")


def _digest(*parts: bytes | str) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(4, "big") + data)
    return h.digest()
