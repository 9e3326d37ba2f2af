"""What the server refuses in names and strings beyond repomount.paths' rules.

- Names written through any face may hold no control character (0x00-0x1f, 0x7f): a
  newline or a terminal escape in a name makes it unreadable through the URL routes
  (their patterns stop at a newline) and dangerous in every listing a person reads.
  Reading and deleting are not refused, so a name stored before this rule can go.
  The rule itself is repomount.paths', which a mount applies before it makes a name.
- Strings that are stored (paths, commit messages, authors, keys, attributes) must be
  valid Unicode: JSON can carry a lone UTF-16 surrogate ("\\ud800"), which has no UTF-8
  form and which the database cannot store.

Pure functions: each face turns a problem into its own 422.
"""

from __future__ import annotations

from repomount.paths import control_character_problem

__all__ = ["control_character_problem", "is_unicode"]


def is_unicode(text: str) -> bool:
    """Whether `text` has a UTF-8 form (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
