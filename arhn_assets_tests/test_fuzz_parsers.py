"""Garbled LLM output (issue 8): 10,000 generated completions per parser (rankings, free spans,
sentence choices, recorded verdicts), none raises, every one
gets a status, and every ranking is a permutation of the window's candidates.

The completions mix what judges really emit when they go wrong: JSON instead of the asked format,
reasoning in think tags (closed, unclosed, stray), digits from other scripts and compatibility
forms, prose around a ranking, and very long outputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arhn_assets.core.audit import rlhn_verdicts
from arhn_assets.core.parsing import parse_ranking, parse_sentence_choice, parse_snippet
from arhn_assets.core.prompts import load_template
from arhn_assets.core.snippets import split_sentences

pytestmark = pytest.mark.slow  # 10,000 generated completions per parser (about 2 minutes)

COMPLETIONS = 10_000
FUZZ = settings(max_examples=COMPLETIONS, deadline=None, database=None, suppress_health_check=list(HealthCheck))
RANKING_PATTERN = load_template("answerability_ranking")["output_pattern"]
SNIPPET = load_template("answer_snippet")
PASSAGE = "Yeast ferments sugars in the dough, releasing carbon dioxide that makes bread rise (Pasteur, 1857)."

IDS = st.integers(min_value=-3, max_value=45)
UNICODE_DIGITS = st.sampled_from(["３", "٣", "۷", "५", "𝟙", "²", "⑫", "⒛", "½", "〇", "٠", "໒"])
PIECES = st.one_of(
    IDS.map(lambda i: f"[{i}]"),
    IDS.map(str),
    UNICODE_DIGITS,
    st.sampled_from(
        [
            " > ",
            ">",
            " ",
            "\n",
            ",",
            "[",
            "]",
            "［",
            "］",
            "<think>",
            "</think>",
            "<THINK>",
            "</Think>",
            "Ranking:",
            "NO_ANSWER",
            "no answer",
            "Answer:",
            '"',
            "“",
            "”",
            "…",
            "\u200b",
            "\ufeff",
        ]
    ),
    st.text(max_size=12),
    st.sampled_from(PASSAGE.split(" ")),
)
JSONISH = st.one_of(
    st.lists(IDS, max_size=25).map(lambda ids: json.dumps({"ranking": ids})),
    st.lists(IDS, max_size=25).map(json.dumps),
    st.text(max_size=80).map(lambda t: json.dumps({"answer": t}, ensure_ascii=False)),
    st.sampled_from(PASSAGE.split(". ")).map(lambda t: json.dumps({"snippet": t})),
    st.just('{"ranking": [3, 1, 2'),  # cut off mid-JSON
)
THINKING = st.tuples(st.text(max_size=40), st.lists(PIECES, max_size=20).map("".join), st.booleans()).map(
    lambda t: f"<think>{t[0]}" + ("</think>" if t[2] else "") + t[1]
)
LONG = st.tuples(st.lists(PIECES, min_size=1, max_size=5).map("".join), st.integers(min_value=200, max_value=5000)).map(
    lambda t: t[0] * t[1]
)
COMPLETION = st.one_of(
    st.lists(PIECES, max_size=60).map("".join),
    JSONISH,
    THINKING,
    LONG,
    st.text(max_size=200),
    st.none(),
    st.just(""),
)


@FUZZ
@given(text=COMPLETION, n=st.integers(min_value=1, max_value=40), use_pattern=st.booleans())
def test_every_ranking_completion_gets_a_status_and_a_permutation(text, n, use_pattern):
    result = parse_ranking(text, n, RANKING_PATTERN if use_pattern else None)
    assert result.status in {"ok", "wrong_format", "repetition", "missing_documents"}
    assert sorted(result.order) == list(range(n))


@FUZZ
@given(text=COMPLETION, passage=st.one_of(st.just(PASSAGE), st.text(max_size=120)), use_prefix=st.booleans())
def test_every_snippet_completion_gets_a_status_and_answers_only_from_the_passage(text, passage, use_prefix):
    result = parse_snippet(text, passage, SNIPPET["no_answer_token"], SNIPPET["strip_prefix"] if use_prefix else None)
    assert result.status in {"answer", "no_answer", "ungrounded", "invalid"}
    assert (result.snippet is not None) == (result.status == "answer")
    if result.snippet is not None:
        assert result.snippet in passage


@FUZZ
@given(
    text=st.one_of(COMPLETION, st.tuples(IDS, IDS).map(lambda t: f"{t[0]}-{t[1]}")),
    passage=st.one_of(st.just(PASSAGE), st.text(min_size=1, max_size=120)),
)
def test_every_sentence_choice_gets_a_status_and_answers_only_from_the_passage(text, passage):
    result = parse_sentence_choice(text, split_sentences(passage), passage)
    assert result.status in {"answer", "no_answer", "invalid"}
    assert (result.snippet is not None) == (result.status == "answer")
    if result.snippet is not None:
        assert result.snippet in passage


VERDICT_LIST = st.lists(st.one_of(IDS.map(lambda i: f"Doc ({i})"), PIECES), max_size=8).map(", ".join)
VERDICT = st.one_of(
    st.tuples(VERDICT_LIST, VERDICT_LIST, st.text(max_size=30)).map(
        lambda t: (
            f"<thinking>{t[2]}</thinking><verdict><better> Preferred: [{t[0]}] </better><worse> "
            f"Relevant: [{t[1]}] </worse></verdict>"
        )
    ),
    COMPLETION,
)


@FUZZ
@given(response=VERDICT, negatives=st.integers(min_value=0, max_value=20))
def test_every_recorded_verdict_is_read_or_skipped_with_its_line(response, negatives):
    record = {"query_id": "q", "negative_passage_ids": [f"n{i}" for i in range(negatives)], "response": response}
    frame, problems = rlhn_verdicts([(7, record)], "verdicts.jsonl")
    if problems:
        assert frame.height == 0 and len(problems) == 1 and problems[0].startswith("verdicts.jsonl:7 [response] ")
    else:
        assert frame["doc_id"].to_list() == record["negative_passage_ids"]
        assert set(frame["verdict"]) <= {"better", "worse", "none"}
