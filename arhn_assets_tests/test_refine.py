"""The decision rule, configuration by configuration (truth tables on a hand-made query)."""

from __future__ import annotations

import polars as pl
import pytest

from arhn_assets.core.refine import RefineConfig, decide, refined_triplets, summary
from arhn_assets_tests.helpers.refine_data import CANDIDATES, RANKING, SNIPPETS, candidates, rankings, snippets

ALL = ("baseline", "R", "F", "R+F", "remove", "hn_remove")


def decisions_of(frame: pl.DataFrame, config: str) -> dict[str, str]:
    return dict(frame.filter(pl.col("config") == config).select("doc_id", "decision").iter_rows())


def test_truth_table_of_every_configuration():
    frame = decide(CANDIDATES, SNIPPETS, RANKING, RefineConfig(configs=ALL))
    keep = dict.fromkeys(["n1", "n2", "n3", "n4", "n5"], "keep_negative")
    expected = {
        "baseline": keep,
        "R": keep | {"n1": "relabel_positive"},
        "F": keep | {"n2": "filter_ambiguous"},
        "R+F": keep | {"n1": "relabel_positive", "n2": "filter_ambiguous"},
        "remove": keep,
        "hn_remove": keep | {"n1": "filter_ambiguous", "n2": "filter_ambiguous"},
    }
    for config, table in expected.items():
        assert decisions_of(frame, config) == {"p": "keep_positive"} | table, config
    kept = dict(frame.group_by("config").agg(pl.col("query_kept").first()).iter_rows())
    assert kept == {"baseline": True, "R": True, "F": True, "R+F": True, "remove": False, "hn_remove": True}
    row = frame.filter(pl.col("config") == "R", pl.col("doc_id") == "n1").row(0, named=True)
    assert (row["llm_rank"], row["positive_rank"], row["has_snippet"], row["original_label"]) == (
        1,
        2,
        True,
        "negative",
    )


def test_relabel_can_require_a_snippet():
    no_snippet_above = snippets("q", {"p": "answer", "n1": "no_answer"})
    plain = decide(CANDIDATES, no_snippet_above, RANKING, RefineConfig(configs=("R",)))
    strict = decide(CANDIDATES, no_snippet_above, RANKING, RefineConfig(configs=("R",), relabel_requires_snippet=True))
    assert decisions_of(plain, "R")["n1"] == "relabel_positive"
    assert decisions_of(strict, "R")["n1"] == "keep_negative"


def test_a_negative_must_beat_every_original_positive():
    two_positives = candidates("q", ["p1", "p2"], ["n1", "n2"])
    ranking = rankings("q", ["p1", "n1", "p2", "n2"])
    frame = decide(two_positives, snippets("q", {}), ranking, RefineConfig(configs=("R",)))
    assert decisions_of(frame, "R") == {
        "p1": "keep_positive",
        "p2": "keep_positive",
        "n1": "keep_negative",
        "n2": "keep_negative",
    }
    assert frame["positive_rank"].unique().to_list() == [1]


def test_too_many_flagged_drops_the_query_counting_what_the_configuration_acts_on():
    frame = decide(CANDIDATES, SNIPPETS, RANKING, RefineConfig(configs=("R", "F", "R+F"), max_flagged=1))
    notes = dict(frame.group_by("config").agg(pl.col("query_note").first()).iter_rows())
    assert notes == {"R": None, "F": None, "R+F": "too_many_flagged"}
    assert not frame.filter(pl.col("config") == "R+F")["query_kept"].any()


@pytest.mark.parametrize("status", ["wrong_format", "repetition", "missing_documents"])
def test_an_invalid_ranking_leaves_labels_unchanged_and_is_counted(status):
    frame = decide(
        CANDIDATES, SNIPPETS, rankings("q", ["n1", "p", "n2", "n3", "n4", "n5"], status), RefineConfig(configs=("R+F",))
    )
    assert set(decisions_of(frame, "R+F").values()) == {"keep_positive", "keep_negative"}
    assert frame["query_note"].unique().to_list() == ["invalid_ranking"]
    assert frame["query_kept"].all()
    repaired = decide(
        CANDIDATES,
        SNIPPETS,
        rankings("q", ["n1", "p", "n2", "n3", "n4", "n5"], status),
        RefineConfig(configs=("R+F",), accept_repaired_rankings=True),
    )
    expected_usable = status != "wrong_format"
    assert (decisions_of(repaired, "R+F")["n1"] == "relabel_positive") == expected_usable


def test_a_query_without_ranking_is_left_unchanged():
    frame = decide(CANDIDATES, SNIPPETS, rankings("other", ["x"]), RefineConfig(configs=("R",)))
    assert frame["query_note"].unique().to_list() == ["invalid_ranking"]


@pytest.mark.parametrize(("policy", "kept"), [("keep", True), ("drop", False)])
def test_a_query_left_without_negatives_is_kept_or_dropped_and_counted(policy, kept):
    single = candidates("q", ["p"], ["n1"])
    frame = decide(
        single,
        snippets("q", {"n1": "answer"}),
        rankings("q", ["n1", "p"]),
        RefineConfig(configs=("R",), empty_negatives=policy),
    )
    assert frame["query_note"].unique().to_list() == ["no_negatives_left"]
    assert frame["query_kept"].unique().to_list() == [kept]
    assert summary(frame)["left_without_negatives"].to_list() == [1]


def test_backfill_takes_the_unjudged_reserve_or_drops_the_query():
    single = pl.concat(
        [
            candidates("q", ["p"], ["n1"]),
            pl.DataFrame({"dataset": "toy", "query_id": "q", "doc_id": ["r1", "r2"], "source": "reserve"}),
        ]
    )
    config = RefineConfig(configs=("baseline", "R"), empty_negatives="backfill")
    frame = decide(single, snippets("q", {"n1": "answer"}), rankings("q", ["n1", "p"]), config)
    refined = {c: (p, n) for _, c, _, p, n in refined_triplets(frame).iter_rows()}
    assert refined == {"baseline": (["p"], ["n1"]), "R": (["p", "n1"], ["r1", "r2"])}
    assert summary(frame).filter(pl.col("config") == "R")["backfilled"].to_list() == [1]
    backfilled = frame.filter(pl.col("doc_id") == "r1")
    assert backfilled["llm_rank"].to_list() == [None] and backfilled["query_note"].to_list() == ["backfilled"]

    without_reserve = decide(
        single.filter(pl.col("source") != "reserve"),
        snippets("q", {"n1": "answer"}),
        rankings("q", ["n1", "p"]),
        config,
    )
    assert without_reserve.filter(pl.col("config") == "R")["query_kept"].unique().to_list() == [False]


def test_refined_triplets_and_summary():
    frame = decide(CANDIDATES, SNIPPETS, RANKING, RefineConfig(configs=ALL))
    refined = {c: (p, n) for _, c, _, p, n in refined_triplets(frame).iter_rows()}
    assert refined["baseline"] == (["p"], ["n1", "n2", "n3", "n4", "n5"])
    assert refined["R"] == (["p", "n1"], ["n2", "n3", "n4", "n5"])
    assert refined["F"] == (["p"], ["n1", "n3", "n4", "n5"])
    assert refined["R+F"] == (["p", "n1"], ["n3", "n4", "n5"])
    assert refined["hn_remove"] == (["p"], ["n3", "n4", "n5"])
    assert "remove" not in refined
    rates = {r["config"]: r for r in summary(frame).iter_rows(named=True)}
    assert (
        rates["R+F"]["relabeled"] == 1
        and rates["R+F"]["filtered"] == 1
        and rates["R+F"]["relabel_rate"] == pytest.approx(0.2)
    )
    assert rates["remove"]["queries_kept"] == 0 and rates["baseline"]["queries_kept"] == 1


def test_unknown_configurations_are_refused():
    with pytest.raises(ValueError, match="unknown configuration"):
        RefineConfig(configs=("R", "X"))


def test_decision_examples_put_the_texts_beside_each_changed_label():
    from arhn_assets.core.refine import decision_examples

    frame = decide(CANDIDATES, SNIPPETS, RANKING, RefineConfig(configs=("R+F",)))
    triplets = pl.DataFrame({"query_id": ["q"], "query_text": ["what is n1?"]})
    passages = pl.DataFrame({"doc_id": ["n1", "n2"], "title": ["N1", None], "text": ["n1 is a thing", "n2 too"]})
    snippet_texts = SNIPPETS.with_columns(snippet=pl.format("span of {}", "doc_id"))
    examples = decision_examples(frame, triplets, passages, snippet_texts)
    assert examples.select("doc_id", "decision", "query_text", "snippet", "passage").rows() == [
        ("n1", "relabel_positive", "what is n1?", "span of n1", "N1 n1 is a thing"),
        ("n2", "filter_ambiguous", "what is n1?", "span of n2", "n2 too"),
    ]


def test_answers_can_be_read_from_the_answer_probability():
    """A judge that says NO_ANSWER to everything but whose first token still leans: with
    answered_by='answer_probability', a negative below the positive with P(answer) >= the
    threshold is filtered; the snippet rule would filter nothing."""
    statuses = dict.fromkeys(["p", "n1", "n2", "n3"], "no_answer")
    probabilities = {"p": 0.7, "n1": 0.9, "n2": 0.6, "n3": 0.2}
    frame_snippets = snippets("q", statuses, probabilities)
    ranking = rankings("q", ["n1", "p", "n2", "n3"])
    by_snippet = decide(
        candidates("q", ["p"], ["n1", "n2", "n3"]), frame_snippets, ranking, RefineConfig(configs=("F",))
    )
    assert set(decisions_of(by_snippet, "F").values()) == {"keep_positive", "keep_negative"}
    config = RefineConfig(configs=("R+F",), answered_by="answer_probability", answer_threshold=0.5)
    frame = decide(candidates("q", ["p"], ["n1", "n2", "n3"]), frame_snippets, ranking, config)
    assert decisions_of(frame, "R+F") == {
        "p": "keep_positive",
        "n1": "relabel_positive",
        "n2": "filter_ambiguous",
        "n3": "keep_negative",
    }
    assert dict(frame.select("doc_id", "answer_probability").iter_rows()) == probabilities


def test_probability_rules_refuse_snippets_without_probabilities():
    with pytest.raises(
        ValueError, match="answered_by='answer_probability' needs answer probabilities, but model toy gave none"
    ):
        decide(CANDIDATES, SNIPPETS, RANKING, RefineConfig(answered_by="answer_probability"))
    with pytest.raises(ValueError, match=r"answer_threshold must lie in \[0, 1\]"):
        RefineConfig(answer_threshold=1.5)
