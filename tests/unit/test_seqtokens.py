"""Tokens naming a store head without a table (server/faces/seqtokens.py)."""

from __future__ import annotations

import itertools

import pytest

from repomount.server.faces.oxen_model import commit_id, seq_of
from repomount.server.faces.relace_model import head_of_token, head_token
from repomount.server.faces.seqtokens import SeqTokens

SEQS = [0, 1, 2, 999, 2**40, 2**64 - 1]


@pytest.mark.parametrize("seq", SEQS)
def test_a_token_names_its_head_in_its_scope_alone(seq: int) -> None:
    tokens = SeqTokens(b"label", check_bytes=8)
    token = tokens.token("repo", seq)
    assert len(token) == 32 and int(token, 16) >= 0
    assert tokens.seq("repo", token) == seq
    assert tokens.seq("repo", token.upper()) == seq
    assert tokens.seq("other", token) is None  # another repository's
    assert SeqTokens(b"other-label", check_bytes=8).seq("repo", token) is None
    assert tokens.seq("repo", token[:-1]) is None
    assert tokens.seq("repo", token + "0") is None


def test_heads_do_not_look_sequential() -> None:
    tokens = SeqTokens(b"label", check_bytes=8)
    firsts = [tokens.token("repo", seq)[:16] for seq in range(5)]
    assert len(set(firsts)) == 5
    assert all(int(b, 16) - int(a, 16) != 1 for a, b in itertools.pairwise(firsts))


@pytest.mark.parametrize(
    "bad", ["", "zz" * 16, "+" + "0" * 31, " " * 32, "0x" + "0" * 30, "0" * 32, "é" * 32]
)
def test_a_string_that_is_no_token_names_no_head(bad: str) -> None:
    assert SeqTokens(b"label", check_bytes=8).seq("repo", bad) is None


def test_the_faces_tokens_stay_what_they_were() -> None:
    """A token given out before an upgrade must name the same head after it: the
    values the faces gave before their tokens shared this code."""
    assert commit_id("a", 1) == "aeb40eacbedbb40dfb035eac6ede3fcd"
    assert head_token("a", 1) == "064470666da4d5d3fb035eac6ede3fcd98705d92"
    assert seq_of("a", "aeb40eacbedbb40dfb035eac6ede3fcd") == 1
    assert head_of_token("a", "064470666da4d5d3fb035eac6ede3fcd98705d92") == 1
    assert len(head_token("repo", 7)) == 40 and head_of_token("repo", head_token("repo", 7)) == 7
