"""The ranking recogniser behind constrained decoding."""

from __future__ import annotations

import itertools

import pytest

from arhn_assets.core.llm.constraints import ranking_prefix_state


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_every_permutation_is_complete_and_every_prefix_allowed(n):
    for permutation in itertools.permutations(range(1, n + 1)):
        text = " > ".join(f"[{i}]" for i in permutation)
        assert ranking_prefix_state(text, n).complete
        assert all(ranking_prefix_state(text[:cut], n).ok for cut in range(len(text)))
        assert not any(ranking_prefix_state(text[:cut], n).complete for cut in range(len(text)))


@pytest.mark.parametrize("text, n", [
    ("[2] > [2]", 3),        # repeated id
    ("[4]", 3),              # out of range
    ("[0]", 3),              # ids start at 1
    ("[01]", 12),            # no leading zeros
    ("[13", 12),             # no id of 12 starts like this
    ("[1]>[2]", 2),          # the separator is ' > '
    ("[1] > [2] > ", 2),     # nothing after a complete ranking
    ("1 > 2", 2),            # brackets required
    ("[1] > [2]x", 2),
])
def test_what_cannot_lead_to_a_complete_ranking_is_refused(text, n):
    assert not ranking_prefix_state(text, n).ok


def test_two_digit_ids_stay_open_while_they_can_grow():
    assert ranking_prefix_state("[1", 12).ok and not ranking_prefix_state("[1", 12).complete
    assert ranking_prefix_state("[1] > [1", 12).ok  # 10, 11, 12 remain
    used_up = " > ".join(f"[{i}]" for i in (10, 11, 12, 1)) + " > [1"
    assert not ranking_prefix_state(used_up, 12).ok
