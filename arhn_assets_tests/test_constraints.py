"""The output languages constrained decoding enforces, in both dialects: the regex (vLLM) is
checked here with Python's `re`; the GBNF grammar (llama.cpp) with real llama.cpp in
test_llm_stages."""

from __future__ import annotations

import itertools
import re

import pytest

from arhn_assets.core.llm.constraints import OutputConstraint, ranking, sentences


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_ranking_regex_accepts_every_permutation(n):
    pattern = re.compile(ranking(n).regex())
    for permutation in itertools.permutations(range(1, n + 1)):
        assert pattern.fullmatch(" > ".join(f"[{i}]" for i in permutation))


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("[4] > [1] > [2]", 3),  # out of range
        ("[0] > [1] > [2]", 3),  # ids start at 1
        ("[1] > [2]", 3),  # too short
        ("[1]>[2]", 2),  # the separator is ' > '
        ("1 > 2", 2),  # brackets required
        ("[1] > [2] > [3] > [1]", 3),  # too long
    ],
)
def test_the_ranking_regex_refuses_other_text(text, n):
    assert not re.fullmatch(ranking(n).regex(), text)


def test_two_digit_ids_match_whole():
    assert re.fullmatch(ranking(12).regex(), " > ".join(f"[{i}]" for i in range(12, 0, -1)))


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("NO_ANSWER", True),
        ("3", True),
        ("12", True),
        ("2-5", True),
        ("13", False),
        ("0", False),
        ("2 - 5", False),
        ("no_answer", False),
        ("3.", False),
        ("", False),
    ],
)
def test_the_sentence_regex(text, ok):
    assert bool(re.fullmatch(sentences(12).regex(), text)) is ok


def test_grammars_name_every_id_once():
    grammar = ranking(3).gbnf()
    assert grammar.startswith('root ::= item " > " item " > " item\n')
    assert 'number ::= "3" | "2" | "1"' in grammar
    assert sentences(2).gbnf().startswith('root ::= "NO_ANSWER" | number | number "-" number\n')


def test_an_empty_constraint_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        OutputConstraint("sentences", 0)
