"""Text from elsewhere made safe to print: on a terminal, in a log, to the journal.

A remote chooses the characters of its names and error messages. Printed raw, a newline
in one forges a line of the mount log that reads as the mount's own, and an escape
sequence drives the terminal of whoever reads it (colours, cursor moves, a title).
`printable` writes each character that Python's repr() would escape (C0 and C1
controls, DEL, line and paragraph separators, invisible format characters such as the
bidirectional overrides, lone surrogates) the way repr() does: `\\n`, `\\x1b`,
`\\u202e`. Everything else is kept, backslashes included: the result is for reading,
not for parsing back, and text already escaped (a repr()'d name inside a message)
comes out unchanged, so escaping twice does no harm. Pure stdlib, no repomount import:
the command line, the log setup and the remotes all use it.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every character repr() would escape written as repr() writes it."""
    if text.isprintable():  # (the usual case, at C speed: every log line passes here)
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
