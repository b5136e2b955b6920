"""Tests for arhn_assets.core.parsing: every completion gets a status, never an exception."""

from __future__ import annotations

import math
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arhn_assets.core.parsing import (
    RankingParse,
    SnippetParse,
    answer_probability,
    find_verbatim,
    parse_ranking,
    parse_sentence_choice,
    parse_snippet,
    strip_thinking,
)
from arhn_assets.core.prompts import load_template

PATTERN = load_template("answerability_ranking")["output_pattern"]
SNIPPET_SPEC = load_template("answer_snippet")
STRIP_PREFIX = SNIPPET_SPEC["strip_prefix"]
NO_ANSWER = SNIPPET_SPEC["no_answer_token"]

RANKING_STATUSES = {"ok", "wrong_format", "repetition", "missing_documents"}
SNIPPET_STATUSES = {"answer", "no_answer", "ungrounded", "invalid"}

PASSAGE = "The Eiffel Tower is 330 metres tall and was completed in 1889, for the World's Fair."


def rank(text, n, pattern=PATTERN) -> RankingParse:
    result = parse_ranking(text, n, pattern)
    assert sorted(result.order) == list(range(n)), f"order {result.order} is no permutation of range({n})"
    return result


def snip(text, passage=PASSAGE) -> SnippetParse:
    return parse_snippet(text, passage, no_answer_token=NO_ANSWER, strip_prefix=STRIP_PREFIX)


# --------------------------------------------------------------------------------------------
# strip_thinking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>[3] first?</think>[2] > [1]", "[2] > [1]"),
        ("<THINK>x</Think>answer", "answer"),
        ("<think>a</think>mid<think>b</think>end", "midend"),
        ("<think>multi\nline\n[1]</think>\nkept", "\nkept"),
        ("before <think>never closed [1] > [2]", "before "),
        ("no reasoning at all", "no reasoning at all"),
        ("", ""),
    ],
)
def test_strip_thinking(text, expected):
    assert strip_thinking(text) == expected


# --------------------------------------------------------------------------------------------
# parse_ranking: examples
# --------------------------------------------------------------------------------------------


def test_template_pattern_is_loaded():
    assert re.fullmatch(PATTERN, "[2] > [1] > [3]")
    assert not re.fullmatch(PATTERN, "Here: [2] > [1]")


def test_clean_ranking_is_ok():
    assert rank("[2] > [1] > [3]", 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


@pytest.mark.parametrize(
    "text",
    [
        "[2]>[1]>[3]",
        "[2] >[1]>  [3]",
        "\n[2] > [1] > [3]\n",
        "  \n\t[2]\n>\n[1]\n>\n[3]  \n\n",
        "[2] > [1] > [3]\r\n",
    ],
)
def test_whitespace_variants_are_ok(text):
    assert rank(text, 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


def test_single_passage_window():
    assert rank("[1]", 1) == RankingParse([0], "ok", 0, 0, 0)


def test_repetition_is_dropped_and_flagged():
    result = rank("[2] > [1] > [2] > [3]", 3)
    assert result.order == [1, 0, 2]
    assert result.status == "repetition"
    assert (result.repeated, result.out_of_range, result.missing) == (1, 0, 0)


def test_missing_documents_appended_in_input_order():
    result = rank("[4] > [2]", 5)
    assert result.order == [3, 1, 0, 2, 4]
    assert result.status == "missing_documents"
    assert (result.repeated, result.out_of_range, result.missing) == (0, 0, 3)


def test_out_of_range_id_is_wrong_format():
    result = rank("[2] > [5] > [1]", 2)
    assert result.order == [1, 0]
    assert result.status == "wrong_format"
    assert (result.repeated, result.out_of_range, result.missing) == (0, 1, 0)


def test_id_zero_is_out_of_range():
    result = rank("[0] > [1]", 2)
    assert result.order == [0, 1]
    assert result.status == "wrong_format"
    assert (result.repeated, result.out_of_range, result.missing) == (0, 1, 1)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None, "<think>[2] > [1]</think>", "I cannot rank these passages."])
@pytest.mark.parametrize("n", [1, 4])
def test_no_ids_gives_identity_and_wrong_format(text, n):
    result = rank(text, n)
    assert result.order == list(range(n))
    assert result.status == "wrong_format"
    assert result.missing == n
    assert result.repeated == result.out_of_range == 0


def test_prose_around_ranking_is_wrong_format_but_ids_used():
    result = rank("Here is the ranking: [2] > [1]", 2)
    assert result.order == [1, 0]
    assert result.status == "wrong_format"
    assert (result.repeated, result.out_of_range, result.missing) == (0, 0, 0)


def test_prose_after_ranking_is_wrong_format_but_ids_used():
    result = rank("[3] > [1] > [2]\nPassage [3] answers it directly.", 3)
    assert result.order == [2, 0, 1]
    assert result.status == "wrong_format"
    assert result.repeated == 1


def test_without_pattern_any_nonempty_body_is_well_formed():
    assert rank("Here is the ranking: [2] > [1]", 2, pattern=None) == RankingParse([1, 0], "ok", 0, 0, 0)
    assert rank("", 2, pattern=None).status == "wrong_format"


def test_think_block_ids_are_ignored():
    text = "<think>Passage [3] looks best, then [1]... [3] > [1] > [2]</think>\n[2] > [1] > [3]"
    assert rank(text, 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


def test_several_think_blocks_are_ignored():
    text = "<think>[1]</think>[2] > <THINK>[2] > [2]</think>[1] > [3]"
    assert rank(text, 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


def test_unclosed_think_means_no_answer():
    result = rank("<think>Let me see: [3] > [2] > [1] is what I would", 3)
    assert result.order == [0, 1, 2]
    assert result.status == "wrong_format"
    assert result.missing == 3


def test_fullwidth_brackets_and_digits_are_parsed():
    text = "［２］ > [1] > [３]"
    result = rank(text, 3)
    assert result.order == [1, 0, 2]
    assert (result.repeated, result.out_of_range, result.missing) == (0, 0, 0)
    # The template's pattern asks for ASCII brackets: the ids are recovered, the format flagged.
    assert result.status == "wrong_format"
    assert rank(text, 3, pattern=None).status == "ok"


def test_fullwidth_digits_in_ascii_brackets_are_ok():
    assert rank("[２] > [1] > [３]", 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


@pytest.mark.parametrize(
    "text",
    [
        "[٢] > [١] > [٣]",  # Arabic-Indic
        "[۲] > [۱] > [۳]",  # Extended Arabic-Indic (Persian)
        "[२] > [१] > [३]",  # Devanagari
    ],
)
def test_other_unicode_decimal_digits(text):
    assert rank(text, 3) == RankingParse([1, 0, 2], "ok", 0, 0, 0)


def test_compatibility_digits_are_normalised():
    # Mathematical bold digits and superscripts become ASCII digits under NFKC.
    result = rank("[𝟐] > [¹] > [3]", 3, pattern=None)
    assert result == RankingParse([1, 0, 2], "ok", 0, 0, 0)


@pytest.mark.parametrize("huge", ["99999999999999999999", "1" * 5000, "0000001", "1000000"])
def test_huge_numbers_are_out_of_range(huge):
    result = rank(f"[{huge}]", 3)
    assert result.order == [0, 1, 2]
    assert result.status == "wrong_format"
    assert result.out_of_range == 1
    assert result.missing == 3


def test_huge_number_among_valid_ids():
    result = rank("[99999999999999999999] > [2] > [1] > [3]", 3)
    assert result.order == [1, 0, 2]
    assert result.status == "wrong_format"
    assert (result.repeated, result.out_of_range, result.missing) == (0, 1, 0)


def test_very_long_output_parses():
    text = "[1] > " * (100_000 // 6 + 1)
    assert len(text) >= 100_000
    result = rank(text, 20)
    assert result.order == list(range(20))
    assert result.status == "wrong_format"  # the trailing '>' is no well-formed ranking
    assert result.repeated == text.count("[1]") - 1
    assert result.missing == 19


def test_very_long_well_formed_output_with_repeats():
    text = " > ".join(f"[{i % 20 + 1}]" for i in range(20_000))
    assert len(text) > 100_000
    result = rank(text, 20)
    assert result.order == list(range(20))
    assert result.status == "repetition"
    assert result.repeated == 20_000 - 20
    assert result.missing == result.out_of_range == 0


# --------------------------------------------------------------------------------------------
# parse_ranking: status priority wrong_format > repetition > missing_documents > ok
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        # all four problems: malformed, out of range, repeated, missing
        ("ranking: [1] > [1] > [9]", 3, RankingParse([0, 1, 2], "wrong_format", 1, 1, 2)),
        # out of range + repetition + missing, well-formed text
        ("[1] > [1] > [9]", 3, RankingParse([0, 1, 2], "wrong_format", 1, 1, 2)),
        # malformed only
        ("[2], [1]", 2, RankingParse([1, 0], "wrong_format", 0, 0, 0)),
        # malformed + repetition
        ("[2], [1], [2]", 2, RankingParse([1, 0], "wrong_format", 1, 0, 0)),
        # malformed + missing
        ("[2] then", 2, RankingParse([1, 0], "wrong_format", 0, 0, 1)),
        # out of range only
        ("[2] > [1] > [3]", 2, RankingParse([1, 0], "wrong_format", 0, 1, 0)),
        # repetition + missing
        ("[1] > [1]", 2, RankingParse([0, 1], "repetition", 1, 0, 1)),
        ("[3] > [3] > [3] > [1]", 4, RankingParse([2, 0, 1, 3], "repetition", 2, 0, 2)),
        # repetition only
        ("[2] > [1] > [2]", 2, RankingParse([1, 0], "repetition", 1, 0, 0)),
        # missing only
        ("[2]", 3, RankingParse([1, 0, 2], "missing_documents", 0, 0, 2)),
        # nothing wrong
        ("[3] > [1] > [2]", 3, RankingParse([2, 0, 1], "ok", 0, 0, 0)),
    ],
)
def test_status_priority(text, n, expected):
    assert rank(text, n) == expected


# --------------------------------------------------------------------------------------------
# parse_ranking: property
# --------------------------------------------------------------------------------------------

RANKING_TOKENS = st.sampled_from(
    [
        "[",
        "]",
        ">",
        " ",
        "\n",
        "\t",
        ",",
        "0",
        "1",
        "2",
        "3",
        "7",
        "9",
        "10",
        "12",
        "39",
        "40",
        "41",
        "100",
        "1234567",
        "99999999999999999999",
        "<think>",
        "</think>",
        "<THINK>",
        "</Think>",
        "３",
        "［",
        "］",
        "٣",
        "۷",
        "५",
        "𝟙",
        "²",
        "⑫",
        "⒛",
        "½",
        "[1]",
        "[2]",
        "[3]",
        " > ",
    ]
)
RANKING_TEXT = st.one_of(st.text(), st.lists(RANKING_TOKENS, max_size=60).map("".join))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=RANKING_TEXT, n=st.integers(min_value=1, max_value=40), use_pattern=st.booleans())
def test_ranking_property(text, n, use_pattern):
    result = parse_ranking(text, n, PATTERN if use_pattern else None)
    assert isinstance(result.order, list)
    assert sorted(result.order) == list(range(n))
    assert result.status in RANKING_STATUSES
    assert min(result.repeated, result.out_of_range, result.missing) >= 0
    assert 0 <= result.missing <= n
    if result.status == "ok":
        assert result.repeated == result.out_of_range == result.missing == 0
    if result.status == "repetition":
        assert result.repeated > 0 and result.out_of_range == 0
    if result.status == "missing_documents":
        assert result.missing > 0 and result.repeated == result.out_of_range == 0
    # The appended missing ids come in input order.
    tail = result.order[n - result.missing :]
    assert tail == sorted(tail)


# --------------------------------------------------------------------------------------------
# parse_snippet: examples
# --------------------------------------------------------------------------------------------


def test_exact_span_is_answer():
    result = snip("330 metres tall")
    assert result == SnippetParse("answer", "330 metres tall", "330 metres tall")


def test_whole_passage_is_answer():
    assert snip(PASSAGE).snippet == PASSAGE


@pytest.mark.parametrize(
    ("passage", "text", "expected"),
    [
        ("It was completed in\n1889 for the fair.", "completed in 1889", "completed in\n1889"),
        ("It was completed  in   1889.", "completed in 1889", "completed  in   1889"),
        ("It is 330\u00a0metres tall.", "330 metres tall", "330\u00a0metres tall"),
        ("It is 330 metres tall.", "330\u00a0metres  tall", "330 metres tall"),
        ("It was\tcompleted\r\nin 1889.", "was completed in", "was\tcompleted\r\nin"),
        ("the ﬁrst ﬂight was short", "the first flight", "the ﬁrst ﬂight"),
        ("the first flight was short", "the ﬁrst ﬂight", "the first flight"),
        ("model ＧＰＴ４ was released", "GPT4", "ＧＰＴ４"),
        ("model GPT4 was released", "ＧＰＴ４ was", "GPT4 was"),
        ("an area of 5 km² in total", "5 km2", "5 km²"),
    ],
)
def test_whitespace_and_compatibility_forms_return_passage_text(passage, text, expected):
    result = snip(text, passage)
    assert result.status == "answer"
    assert result.snippet == expected
    assert passage.find(result.snippet) >= 0


@pytest.mark.parametrize(
    "text",
    [
        '"330 metres tall"',
        "'330 metres tall'",
        "`330 metres tall`",
        "“330 metres tall”",
        "‘330 metres tall’",
        "«330 metres tall»",
        "330 metres tall.",
        '"330 metres tall."',
        "“330 metres tall”.",
        "  330 metres tall  \n",
    ],
)
def test_quotes_and_trailing_period_are_tolerated(text):
    assert snip(text) == SnippetParse("answer", "330 metres tall", text)


def test_trailing_period_kept_when_in_passage():
    passage = "It opened in 1889. Nobody expected it."
    assert snip("It opened in 1889.", passage).snippet == "It opened in 1889."


@pytest.mark.parametrize(
    "text",
    [
        "Answer: 330 metres tall",
        "answer:330 metres tall",
        "ANSWER - 330 metres tall",
        "Snippet - 330 metres tall",
        "Span: 330 metres tall",
        "Extracted span: 330 metres tall",
        "Response: 330 metres tall",
        '  Answer: "330 metres tall".',
    ],
)
def test_label_prefixes_are_stripped(text):
    assert snip(text).snippet == "330 metres tall"
    assert snip(text).status == "answer"


def test_prefix_not_stripped_without_strip_prefix():
    assert parse_snippet("Answer: 330 metres tall", PASSAGE).status == "ungrounded"


@pytest.mark.parametrize(
    "text",
    [
        "NO_ANSWER",
        "no answer",
        "No Answer",
        "NO_ANSWER.",
        "  NO_ANSWER\n",
        "NO-ANSWER",
        '"NO_ANSWER"',
        "NO_ANSWER: the passage is about something else",
        "Answer: NO_ANSWER",
        "<think>The passage is about 330 metres tall</think>NO_ANSWER",
    ],
)
def test_no_answer_variants(text):
    assert snip(text) == SnippetParse("no_answer", None, text)


@pytest.mark.parametrize(
    "text", ["", "   ", "\n\t ", "Answer:", "<think>330 metres tall</think>", "<think>330 metres tall"]
)
def test_empty_is_invalid(text):
    assert snip(text) == SnippetParse("invalid", None, text)


def test_none_is_invalid():
    assert snip(None) == SnippetParse("invalid", None, "")


@pytest.mark.parametrize(
    "text",
    [
        "It is 330 m high",  # paraphrase
        "the tower stands 330 metres tall",  # words not in the passage
        "331 metres tall",
        "completed in 1890",
        "330 metres tall, completed in 1889",  # stitched from two places
    ],
)
def test_span_not_in_passage_is_ungrounded(text):
    assert snip(text) == SnippetParse("ungrounded", None, text)


@pytest.mark.parametrize("text", ["330 METRES TALL", "the eiffel tower", "THE EIFFEL TOWER IS 330 METRES TALL"])
def test_case_differences_are_not_grounded(text):
    assert snip(text).status == "ungrounded"


def test_think_blocks_stripped_before_parsing():
    text = '<think>Maybe "completed in 1889"? No: the height.</think>\n330 metres tall'
    assert snip(text) == SnippetParse("answer", "330 metres tall", text)


def test_think_block_alone_with_span_inside_is_not_an_answer():
    assert snip("<think>330 metres tall</think>It is tall").status == "ungrounded"


def test_custom_no_answer_token():
    assert parse_snippet("NONE", PASSAGE, no_answer_token="NONE").status == "no_answer"
    assert parse_snippet("NO_ANSWER", PASSAGE, no_answer_token="NONE").status == "ungrounded"


def test_span_starting_with_label_word_is_kept_whole():
    passage = "Answer-set programming is a form of declarative programming."
    result = snip("Answer-set programming is a form of declarative programming", passage)
    assert result.status == "answer"
    assert result.snippet == "Answer-set programming is a form of declarative programming"


# --------------------------------------------------------------------------------------------
# find_verbatim
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span", ["", " ", "   \n\t", "\u00a0", "\u2003\u3000"])
def test_find_verbatim_empty_span_is_none(span):
    assert find_verbatim(span, PASSAGE) is None
    assert find_verbatim(span, "   ") is None


def test_find_verbatim_returns_original_whitespace():
    passage = "was completed in\n\n   1889,\tfor the fair"
    assert find_verbatim("in 1889, for", passage) == "in\n\n   1889,\tfor"


def test_find_verbatim_outer_whitespace_of_span_is_ignored():
    assert find_verbatim("  330 metres\n", PASSAGE) == "330 metres"


def test_find_verbatim_absent_span_is_none():
    assert find_verbatim("340 metres", PASSAGE) is None
    assert find_verbatim("anything", "") is None


def test_find_verbatim_returns_first_occurrence_text():
    passage = "alpha\u00a0beta, then alpha beta"
    assert find_verbatim("alpha beta", passage) == "alpha\u00a0beta"


def test_find_verbatim_expansion_returns_whole_source_character():
    # 'ﬁ' normalises to two characters; a span covering only part of it returns the whole character.
    assert find_verbatim("ﬁnd it", "we ﬁnd it") == "ﬁnd it"
    assert find_verbatim("find", "we ﬁnd it") == "ﬁnd"


@pytest.mark.parametrize(
    ("span", "passage"),
    [("café", "un cafe\u0301 au lait"), ("cafe\u0301", "un café au lait")],
)
def test_find_verbatim_canonically_equivalent_forms(span, passage):
    found = find_verbatim(span, passage)
    assert found is not None and passage.find(found) >= 0
    assert snip(span, passage).status == "answer"


# --------------------------------------------------------------------------------------------
# parse_snippet / find_verbatim: properties
# --------------------------------------------------------------------------------------------

PASSAGE_PIECES = st.sampled_from(
    [
        "the",
        "The",
        " ",
        "  ",
        "\n",
        "\t",
        "\u00a0",
        "\u2003",
        "\u3000",
        ".",
        ",",
        '"',
        "“",
        "”",
        "'",
        "ﬁ",
        "fi",
        "ﬂ",
        "Ａ",
        "A",
        "a",
        "²",
        "2",
        "1889",
        "¨",
        "´",
        "e\u0301",
        "é",
        "ß",
        "answer",
        "Answer:",
        "no",
        "NO_ANSWER",
        "<think>",
        "</think>",
        "Ⅻ",
        "ﷺ",
        "ｶ",
        "ｯ",
    ]
)
RICH_TEXT = st.one_of(st.text(), st.lists(PASSAGE_PIECES, max_size=40).map("".join))


def _is_no_answer_marker(body: str) -> bool:
    body = body.strip()
    marker = re.sub(r"[^A-Z]", "", NO_ANSWER.upper())
    return re.sub(r"[^A-Z]", "", body.upper()) == marker or body.upper().startswith(NO_ANSWER.upper())


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(RICH_TEXT, st.none()), passage=RICH_TEXT, use_prefix=st.booleans())
def test_snippet_property_any_input(text, passage, use_prefix):
    result = parse_snippet(text, passage, no_answer_token=NO_ANSWER, strip_prefix=STRIP_PREFIX if use_prefix else None)
    assert result.status in SNIPPET_STATUSES
    assert result.raw == (text or "")
    if result.status == "answer":
        assert result.snippet
        assert passage.find(result.snippet) >= 0
    else:
        assert result.snippet is None


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(passage=RICH_TEXT.filter(str.strip), data=st.data())
def test_snippet_property_slices_are_grounded(passage, data):
    i = data.draw(st.integers(min_value=0, max_value=len(passage) - 1), label="i")
    j = data.draw(st.integers(min_value=i + 1, max_value=len(passage)), label="j")
    span = passage[i:j]
    assume(span.strip())
    # A span is text a reader can copy: it does not cut a letter from its combining marks.
    assume(not unicodedata.combining(passage[i]) and (j == len(passage) or not unicodedata.combining(passage[j])))
    assume(strip_thinking(span) == span)  # a think tag inside the slice is reasoning, not a span
    assume(not _is_no_answer_marker(span))
    result = parse_snippet(span, passage)
    assert result.status == "answer", (span, passage, result)
    assert result.snippet
    assert passage.find(result.snippet) >= 0


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(span=RICH_TEXT, passage=RICH_TEXT)
def test_find_verbatim_property(span, passage):
    found = find_verbatim(span, passage)
    if not span.strip():
        assert found is None
    if found is not None:
        assert found and passage.find(found) >= 0


def test_many_unclosed_think_tags_parse_in_linear_time():
    hostile = "<think>" * 200_000
    assert parse_ranking(hostile, 3).status == "wrong_format"
    assert parse_snippet(hostile, PASSAGE).status == "invalid"


def test_a_lone_closing_think_tag_ends_the_reasoning():
    assert parse_ranking("I think [3] is best...</think>[2] > [1] > [3]", 3).order == [1, 0, 2]
    assert strip_thinking("reasoning</think> answer <think>more</think> end") == " answer  end"


# --------------------------------------------------------------------------------------------
# parse_sentence_choice (stage 1, sentence mode)
# --------------------------------------------------------------------------------------------

SENTENCE_PASSAGE = "Bread rises. Yeast makes carbon dioxide. The gas is trapped by gluten."
SENTENCE_SPANS = [(0, 13), (13, 40), (40, len(SENTENCE_PASSAGE))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", "Yeast makes carbon dioxide."),
        (" 2-3 ", "Yeast makes carbon dioxide. The gas is trapped by gluten."),
        ("3-2", "Yeast makes carbon dioxide. The gas is trapped by gluten."),  # a reversed range is the same range
        ("[1]", "Bread rises."),
        ("1 to 2", "Bread rises. Yeast makes carbon dioxide."),
        ("２", "Yeast makes carbon dioxide."),  # full-width digit
        ("<think>maybe 1</think>3.", "The gas is trapped by gluten."),
    ],
)
def test_sentence_choices_are_the_passages_own_text(text, expected):
    parsed = parse_sentence_choice(text, SENTENCE_SPANS, SENTENCE_PASSAGE)
    assert parsed.status == "answer" and parsed.snippet == expected and parsed.snippet in SENTENCE_PASSAGE


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("NO_ANSWER", "no_answer"),
        ("no answer", "no_answer"),
        ("4", "invalid"),
        ("0", "invalid"),
        ("2-4", "invalid"),
        ("", "invalid"),
        ("The second one", "invalid"),
        ("1, 3", "invalid"),
    ],
)
def test_other_sentence_choices_get_a_status(text, status):
    parsed = parse_sentence_choice(text, SENTENCE_SPANS, SENTENCE_PASSAGE)
    assert parsed.status == status and parsed.snippet is None


# --------------------------------------------------------------------------------------------
# answer_probability (from the first token's alternatives)
# --------------------------------------------------------------------------------------------


def test_answer_probability_is_the_mass_away_from_no_answer():
    first = (("NO", math.log(0.6)), ("3", math.log(0.3)), ("The", math.log(0.1)))
    assert answer_probability(first) == pytest.approx(0.4)
    # With a grammar only numbers can start an answer: the renormalised constrained probability.
    assert answer_probability(first, numbers_only=True) == pytest.approx(0.3 / 0.9)


def test_every_case_and_prefix_of_the_marker_counts_as_no_answer():
    first = (("N", math.log(0.1)), ("No", math.log(0.2)), (" NO_", math.log(0.3)), ("Yes", math.log(0.4)))
    assert answer_probability(first) == pytest.approx(0.4)


@pytest.mark.parametrize("first", [None, (), ((" ", -0.1),), (("The", -0.1),)])
def test_answer_probability_is_none_without_evidence(first):
    assert answer_probability(first, numbers_only=True) is None


@given(st.lists(st.tuples(st.text(max_size=6), st.floats(min_value=-30, max_value=0)), max_size=20))
def test_answer_probability_lies_in_the_unit_interval(first):
    value = answer_probability(tuple(first))
    assert value is None or 0.0 <= value <= 1.0


def test_a_sentence_choice_is_returned_in_the_stored_passages_own_characters():
    """The model reads the passage with its whitespace collapsed; the snippet is the stored text's."""
    from arhn_assets.core.snippets import SnippetConfig, snippet_task

    stored = "Bread rises.\nYeast  makes carbon\tdioxide. The gas is trapped."
    task = snippet_task("What makes bread rise?", "", stored, SnippetConfig(mode="sentence"))
    assert "[2] Yeast makes carbon dioxide." in task.request.messages[1][1]
    parsed = task.parse("2", SNIPPET_SPEC | {"no_answer_token": "NO_ANSWER"})
    assert parsed.status == "answer" and parsed.snippet == "Yeast  makes carbon\tdioxide." and parsed.snippet in stored
