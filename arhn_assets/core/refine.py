"""Stage 3, refine: turn snippets and rankings into relabel decisions and refined triplets.

Per query, `positive_rank` is the LLM rank of its best-ranked original positive (a negative must
beat every original positive to be relabeled: the conservative reading of "ranked above the
positive"). For each mined or provided negative:
- it is *relabel-flagged* when ranked above `positive_rank` (and, with
  `relabel_requires_snippet`, also carries a grounded snippet);
- it is *filter-flagged* when ranked below and answers the query: it answers, just less
  directly, so it is neither a clean negative nor a preferred positive. *Answers* means it carries
  a grounded snippet (`answered_by: snippet`, the paper's rule), or its stage-1
  `answer_probability` is at least `answer_threshold` (`answered_by: answer_probability`, for
  judges whose continuous score carries the signal their yes/no answers lose).

Configurations (ARHN's, plus RLHN's for comparison, castorini/rlhn `techniques.py`):
- `baseline`: the mined set unchanged;
- `R`: relabel-flagged negatives become positives;  `F`: filter-flagged negatives are dropped;
- `R+F`: both;
- `remove`: a query with any flagged negative is dropped whole;
- `hn_remove`: every flagged negative is dropped.
Every configuration but `baseline` drops a query with more than `max_flagged` of the negatives it
acts on flagged (RLHN's threshold, 8; R counts relabel flags, F filter flags, the others both).
A query whose ranking is invalid keeps its labels unchanged and is counted; a query left without
negatives is kept (in-batch negatives still train it), dropped, or backfilled from its reserve
(negatives mined past `num_negatives` and never judged; without a reserve it is dropped), as
configured, and counted either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

CONFIGS = ("baseline", "R", "F", "R+F", "remove", "hn_remove")
Decision = Literal["keep_negative", "relabel_positive", "filter_ambiguous", "keep_positive"]

# Which flags count towards `max_flagged` (and towards `remove`), as RLHN's filter_string does.
FLAGS_COUNTED = {
    "baseline": set(),
    "R": {"relabel"},
    "F": {"filter"},
    "R+F": {"relabel", "filter"},
    "remove": {"relabel", "filter"},
    "hn_remove": {"relabel", "filter"},
}
DECISIONS_SCHEMA = {
    "dataset": pl.String,
    "config": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "original_label": pl.String,  # positive | negative
    "has_snippet": pl.Boolean,
    "snippet_status": pl.String,
    "answer_probability": pl.Float64,
    "llm_rank": pl.Int64,  # 1-based rank in the LLM's answerability ranking
    "positive_rank": pl.Int64,
    "ranking_status": pl.String,
    "decision": pl.String,
    "query_kept": pl.Boolean,
    "query_note": pl.String,  # why a query was dropped or left unchanged; null otherwise
}
REFINED_SCHEMA = {
    "dataset": pl.String,
    "config": pl.String,
    "query_id": pl.String,
    "positive_ids": pl.List(pl.String),
    "negative_ids": pl.List(pl.String),
}


@dataclass(frozen=True)
class RefineConfig:
    configs: tuple[str, ...] = ("baseline", "R", "F", "R+F")
    relabel_requires_snippet: bool = False
    max_flagged: int | None = 8
    empty_negatives: Literal["keep", "drop", "backfill"] = "keep"
    # rank_llm repairs rankings with repeated or missing ids; by default only clean ones count.
    accept_repaired_rankings: bool = False
    # What makes a negative answer the query (for F, and for R with relabel_requires_snippet).
    answered_by: Literal["snippet", "answer_probability"] = "snippet"
    answer_threshold: float = 0.5

    def __post_init__(self):
        unknown = [c for c in self.configs if c not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
        if not 0.0 <= self.answer_threshold <= 1.0:
            raise ValueError(f"answer_threshold must lie in [0, 1], got {self.answer_threshold}")

    def answers(self, status: str | None, probability: float | None) -> bool:
        if self.answered_by == "snippet":
            return status == "answer"
        return probability is not None and probability >= self.answer_threshold


def _usable(status: str, config: RefineConfig) -> bool:
    return status == "ok" or (config.accept_repaired_rankings and status in ("repetition", "missing_documents"))


@dataclass(frozen=True)
class QueryJudgment:
    """What the judge said of one query's candidates, and the flags it raises."""

    dataset: str
    query_id: str
    docs: list[tuple[str, str]]  # (doc_id, source) of the judged candidates, positives included
    reserve: list[str]  # unjudged negatives kept aside for backfill
    llm_rank: dict[str, int]
    status: str  # the ranking's status
    usable: bool  # the ranking may be acted on
    positive_rank: int | None  # rank of the best-ranked original positive
    flags: dict[str, str | None]  # negative -> 'relabel' | 'filter' | None


def _check_probabilities(snippets: pl.DataFrame, config: RefineConfig) -> None:
    if config.answered_by == "answer_probability" and snippets["answer_probability"].is_null().any():
        models = sorted(set(snippets.filter(pl.col("answer_probability").is_null())["model"].to_list()))
        raise ValueError(
            f"answered_by='answer_probability' needs answer probabilities, but model {', '.join(models)} gave none "
            "for some snippets (its backend returned no log-probabilities); use answered_by='snippet'"
        )


def judge_query(
    group: pl.DataFrame, ranking: list[str] | None, status: str, answers: dict[str, bool], config: RefineConfig
) -> QueryJudgment:
    """One query's candidates (`group`), its ranking and which candidates answer: the flags."""
    llm_rank = {doc: i for i, doc in enumerate(ranking or [], start=1)}
    docs = group.filter(pl.col("source") != "reserve").select("doc_id", "source").rows()
    usable = _usable(status, config) and all(d in llm_rank for d, _ in docs)
    positives = [d for d, source in docs if source == "positive"]
    positive_rank = min((llm_rank[d] for d in positives), default=None) if usable else None
    flags = {}
    for doc, source in docs:
        if source == "positive":
            continue
        above = usable and llm_rank[doc] < positive_rank
        relabel = above and (answers[doc] or not config.relabel_requires_snippet)
        flags[doc] = "relabel" if relabel else "filter" if (usable and not above and answers[doc]) else None
    dataset, query_id = group["dataset"][0], group["query_id"][0]
    reserve = group.filter(pl.col("source") == "reserve")["doc_id"].to_list()
    return QueryJudgment(dataset, query_id, docs, reserve, llm_rank, status, usable, positive_rank, flags)


def apply_configuration(
    name: str, judged: QueryJudgment, config: RefineConfig
) -> tuple[dict[str, str], bool, str | None, list[str]]:
    """What configuration `name` does to one query: each negative's decision, whether the query
    is kept, why not (or why it changed), and the reserve negatives it is backfilled with."""
    flagged = sum(f in FLAGS_COUNTED[name] for f in judged.flags.values())
    kept, note = True, None
    if name != "baseline" and not judged.usable:
        note = "invalid_ranking"
    elif name == "remove" and flagged:
        kept, note = False, "flagged_negatives"
    elif name != "baseline" and config.max_flagged is not None and flagged > config.max_flagged:
        kept, note = False, "too_many_flagged"
    decisions = {doc: _decision(name, flag) if note is None else "keep_negative" for doc, flag in judged.flags.items()}
    backfill: list[str] = []
    if kept and judged.flags and "keep_negative" not in decisions.values():
        if config.empty_negatives == "backfill" and judged.reserve:
            note, backfill = "backfilled", judged.reserve
        else:
            note, kept = "no_negatives_left", config.empty_negatives == "keep"
    return decisions, kept, note, backfill


def decide(
    candidates: pl.DataFrame, snippets: pl.DataFrame, rankings: pl.DataFrame, config: RefineConfig = RefineConfig()
) -> pl.DataFrame:
    """One row per (configuration, query, candidate), `DECISIONS_SCHEMA`.

    candidates: `mined_negatives` (dataset, query_id, doc_id, source);
    snippets: (query_id, doc_id, status, answer_probability); rankings: (query_id, ranking: list of
    doc ids, status).
    """
    _check_probabilities(snippets, config)
    evidence = {
        (q, d): (s, p)
        for q, d, s, p in snippets.select("query_id", "doc_id", "status", "answer_probability").iter_rows()
    }
    ranking_of = {q: (r, s) for q, r, s in rankings.select("query_id", "ranking", "status").iter_rows()}
    rows: list[dict] = []
    for (query_id,), group in candidates.group_by("query_id", maintain_order=True):
        ranking, status = ranking_of.get(query_id, (None, "wrong_format"))
        answers = {d: config.answers(*evidence.get((query_id, d), (None, None))) for d in group["doc_id"]}
        judged = judge_query(group, ranking, status, answers, config)
        for name in config.configs:
            decisions, kept, note, backfill = apply_configuration(name, judged, config)
            common = {
                "dataset": judged.dataset,
                "config": name,
                "query_id": query_id,
                "positive_rank": judged.positive_rank,
                "ranking_status": status,
                "query_kept": kept,
                "query_note": note,
            }
            rows += [
                common
                | {"doc_id": doc, "original_label": "negative", "has_snippet": False, "decision": "keep_negative"}
                for doc in backfill
            ]
            for doc, source in judged.docs:
                snippet_status, probability = evidence.get((query_id, doc), (None, None))
                rows.append(
                    common
                    | {
                        "doc_id": doc,
                        "original_label": "positive" if source == "positive" else "negative",
                        "has_snippet": snippet_status == "answer",
                        "snippet_status": snippet_status,
                        "answer_probability": probability,
                        "llm_rank": judged.llm_rank.get(doc),
                        "decision": "keep_positive" if source == "positive" else decisions[doc],
                    }
                )
    return pl.DataFrame(rows, schema=DECISIONS_SCHEMA).select(DECISIONS_SCHEMA.keys())


def _decision(config: str, flag: str | None) -> Decision:
    if flag == "relabel" and config in ("R", "R+F"):
        return "relabel_positive"
    if (flag == "filter" and config in ("F", "R+F")) or (flag is not None and config == "hn_remove"):
        return "filter_ambiguous"
    return "keep_negative"


def refined_triplets(decisions: pl.DataFrame) -> pl.DataFrame:
    """Per configuration and kept query: original plus relabeled positives, and kept negatives."""
    kept = decisions.filter(pl.col("query_kept"))
    return (
        kept.group_by("dataset", "config", "query_id", maintain_order=True)
        .agg(
            positive_ids=pl.col("doc_id").filter(pl.col("decision").is_in(["keep_positive", "relabel_positive"])),
            negative_ids=pl.col("doc_id").filter(pl.col("decision") == "keep_negative"),
        )
        .select(REFINED_SCHEMA.keys())
        .cast(REFINED_SCHEMA)
    )


SUMMARY_SCHEMA = {
    "dataset": pl.String,
    "config": pl.String,
    "queries": pl.Int64,
    "queries_kept": pl.Int64,
    "queries_dropped": pl.Int64,
    "invalid_rankings": pl.Int64,
    "left_without_negatives": pl.Int64,
    "backfilled": pl.Int64,
    "candidates": pl.Int64,
    "positives": pl.Int64,
    "negatives": pl.Int64,
    "relabeled": pl.Int64,
    "filtered": pl.Int64,
    "kept_negatives": pl.Int64,
    "training_positives": pl.Int64,
    "training_negatives": pl.Int64,
    "relabel_rate": pl.Float64,  # relabeled / negatives (all original negatives of the configuration)
    "filter_rate": pl.Float64,  # filtered / negatives
}


def summary(decisions: pl.DataFrame) -> pl.DataFrame:
    """Per dataset and configuration (`SUMMARY_SCHEMA`): queries kept and dropped, candidates,
    negatives relabeled, filtered and kept, what trains, and the relabel and filter rates. The
    one computation of these figures: the asset metadata, the relabel-rate check and the
    warehouse's relabel_summary all read it."""
    decision, kept = pl.col("decision"), pl.col("query_kept")
    per_query = decisions.group_by("dataset", "config", "query_id").agg(
        kept=kept.all(), note=pl.col("query_note").first()
    )
    queries = per_query.group_by("dataset", "config").agg(
        queries=pl.len(),
        queries_kept=pl.col("kept").sum(),
        queries_dropped=(~pl.col("kept")).sum(),
        invalid_rankings=(pl.col("note") == "invalid_ranking").sum(),
        left_without_negatives=(pl.col("note") == "no_negatives_left").sum(),
        backfilled=(pl.col("note") == "backfilled").sum(),
    )
    candidates = decisions.group_by("dataset", "config").agg(
        candidates=pl.len(),
        positives=(pl.col("original_label") == "positive").sum(),
        negatives=(pl.col("original_label") == "negative").sum(),
        relabeled=(decision == "relabel_positive").sum(),
        filtered=(decision == "filter_ambiguous").sum(),
        kept_negatives=(decision == "keep_negative").sum(),
        training_positives=(kept & decision.is_in(["keep_positive", "relabel_positive"])).sum(),
        training_negatives=(kept & (decision == "keep_negative")).sum(),
    )
    negatives = pl.col("negatives").cast(pl.Float64)
    return (
        queries.join(candidates, on=["dataset", "config"])
        .with_columns(relabel_rate=pl.col("relabeled") / negatives, filter_rate=pl.col("filtered") / negatives)
        .sort("dataset", "config")
        .select(SUMMARY_SCHEMA.keys())
        .cast(SUMMARY_SCHEMA)
    )


def decision_examples(
    decisions: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame, snippets: pl.DataFrame, limit: int = 10
) -> pl.DataFrame:
    """The decisions that changed a label, beside the texts behind them (query, passage, the
    LLM's snippet), so a reviewer can judge each one without a join of their own."""
    changed = decisions.filter(pl.col("decision").is_in(["relabel_positive", "filter_ambiguous"])).head(limit)
    texts = passages.select(
        "doc_id",
        passage=pl.concat_str(
            pl.col("title").fill_null(""), pl.col("text").fill_null(""), separator=" "
        ).str.strip_chars(),
    )
    return (
        changed.join(triplets.select("query_id", "query_text"), on="query_id", how="left")
        .join(texts, on="doc_id", how="left")
        .join(snippets.select("query_id", "doc_id", "snippet"), on=["query_id", "doc_id"], how="left")
        .select(
            "config", "query_id", "query_text", "doc_id", "decision", "llm_rank", "positive_rank", "snippet", "passage"
        )
    )
