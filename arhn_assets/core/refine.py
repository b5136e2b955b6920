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
acts on flagged (RLHN's threshold, 8; R counts relabel flags, F filter flags, the others both). A query whose ranking is invalid keeps its labels unchanged and is counted;
a query left without negatives is kept (in-batch negatives still train it), dropped, or
backfilled from its reserve (negatives mined past `num_negatives` and never judged; without a
reserve it is dropped), as configured, and counted either way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from arhn_assets.core.beir_io import passage_text

CONFIGS = ("baseline", "R", "F", "R+F", "remove", "hn_remove")
Decision = Literal["keep_negative", "relabel_positive", "filter_ambiguous", "keep_positive"]

# Which flags count towards `max_flagged` (and towards `remove`), as RLHN's filter_string does.
FLAGS_COUNTED = {
    "baseline": set(), "R": {"relabel"}, "F": {"filter"},
    "R+F": {"relabel", "filter"}, "remove": {"relabel", "filter"}, "hn_remove": {"relabel", "filter"},
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


def decide(
    candidates: pl.DataFrame, snippets: pl.DataFrame, rankings: pl.DataFrame, config: RefineConfig = RefineConfig()
) -> pl.DataFrame:
    """One row per (configuration, query, candidate), `DECISIONS_SCHEMA`.

    candidates: `mined_negatives` (dataset, query_id, doc_id, source);
    snippets: (query_id, doc_id, status, answer_probability); rankings: (query_id, ranking: list of
    doc ids, status).
    """
    if config.answered_by == "answer_probability" and snippets["answer_probability"].is_null().any():
        models = sorted(set(snippets.filter(pl.col("answer_probability").is_null())["model"].to_list()))
        raise ValueError(f"answered_by='answer_probability' needs answer probabilities, but model {', '.join(models)} gave none "
                         "for some snippets (its backend returned no log-probabilities); use answered_by='snippet'")
    snippet_status = {(q, d): s for q, d, s in snippets.select("query_id", "doc_id", "status").iter_rows()}
    probability = {(q, d): p for q, d, p in snippets.select("query_id", "doc_id", "answer_probability").iter_rows()}
    ranking_of = {q: (r, s) for q, r, s in rankings.select("query_id", "ranking", "status").iter_rows()}
    rows: list[tuple] = []
    for (dataset, query_id), group in candidates.group_by("dataset", "query_id", maintain_order=True):
        ranking, status = ranking_of.get(query_id, (None, "wrong_format"))
        llm_rank = {doc: i for i, doc in enumerate(ranking or [], start=1)}
        docs = group.filter(pl.col("source") != "reserve").select("doc_id", "source").rows()
        reserve = group.filter(pl.col("source") == "reserve")["doc_id"].to_list()
        positives = [d for d, source in docs if source == "positive"]
        usable = _usable(status, config) and all(d in llm_rank for d, _ in docs)
        positive_rank = min((llm_rank[d] for d in positives), default=None) if usable else None
        flags = {}
        for doc, source in docs:
            if source == "positive":
                continue
            answered = config.answers(snippet_status.get((query_id, doc)), probability.get((query_id, doc)))
            above = usable and llm_rank[doc] < positive_rank
            relabel = above and (answered or not config.relabel_requires_snippet)
            flags[doc] = ("relabel" if relabel else "filter" if (usable and not above and answered) else None)
        for name in config.configs:
            flagged = sum(f in FLAGS_COUNTED[name] for f in flags.values())
            kept, note = True, None
            if name != "baseline" and not usable:
                note = "invalid_ranking"
            elif name == "remove" and flagged:
                kept, note = False, "flagged_negatives"
            elif name != "baseline" and config.max_flagged is not None and flagged > config.max_flagged:
                kept, note = False, "too_many_flagged"
            decisions = {doc: _decision(name, flags[doc]) if note is None else "keep_negative" for doc in flags}
            backfill: list[str] = []
            if kept and flags and "keep_negative" not in decisions.values():
                if config.empty_negatives == "backfill" and reserve:
                    note, backfill = "backfilled", reserve
                else:
                    note, kept = "no_negatives_left", config.empty_negatives == "keep"
            for doc in backfill:
                rows.append((dataset, name, query_id, doc, "negative", False, None, None, None, positive_rank, status, "keep_negative", kept, note))
            for doc, source in docs:
                answered = snippet_status.get((query_id, doc))
                rows.append((
                    dataset, name, query_id, doc, "positive" if source == "positive" else "negative",
                    answered == "answer", answered, probability.get((query_id, doc)), llm_rank.get(doc), positive_rank, status,
                    "keep_positive" if source == "positive" else decisions[doc], kept, note,
                ))
    return pl.DataFrame(rows, schema=DECISIONS_SCHEMA, orient="row")


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


def summary(decisions: pl.DataFrame) -> pl.DataFrame:
    """Per configuration: queries kept and dropped, negatives relabeled, filtered and kept, rates."""
    negatives = pl.col("original_label") == "negative"
    per_query = decisions.group_by("config", "query_id").agg(
        kept=pl.col("query_kept").first(), note=pl.col("query_note").first()
    )
    counts = decisions.filter(negatives).group_by("config").agg(
        negatives=pl.len(),
        relabeled=(pl.col("decision") == "relabel_positive").sum(),
        filtered=(pl.col("decision") == "filter_ambiguous").sum(),
    )
    queries = per_query.group_by("config").agg(
        queries=pl.len(),
        queries_kept=pl.col("kept").sum(),
        invalid_rankings=(pl.col("note") == "invalid_ranking").sum(),
        left_without_negatives=(pl.col("note") == "no_negatives_left").sum(),
        backfilled=(pl.col("note") == "backfilled").sum(),
    )
    return queries.join(counts, on="config", how="left").with_columns(
        relabel_rate=pl.col("relabeled") / pl.col("negatives"),
        filter_rate=pl.col("filtered") / pl.col("negatives"),
    ).sort("config")


def decision_examples(decisions: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame, snippets: pl.DataFrame, limit: int = 10) -> pl.DataFrame:
    """The decisions that changed a label, beside the texts behind them (query, passage, the
    LLM's snippet), so a reviewer can judge each one without a join of their own."""
    changed = decisions.filter(pl.col("decision").is_in(["relabel_positive", "filter_ambiguous"])).head(limit)
    texts = passages.select("doc_id", passage=pl.concat_str(pl.col("title").fill_null(""), pl.col("text").fill_null(""), separator=" ").str.strip_chars())
    return (
        changed.join(triplets.select("query_id", "query_text"), on="query_id", how="left")
        .join(texts, on="doc_id", how="left")
        .join(snippets.select("query_id", "doc_id", "snippet"), on=["query_id", "doc_id"], how="left")
        .select("config", "query_id", "query_text", "doc_id", "decision", "llm_rank", "positive_rank", "snippet", "passage")
    )


def _texts(passages: pl.DataFrame) -> dict[str, tuple[str, str]]:
    return {d: (t or "", x or "") for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}


def export_training_files(refined: pl.DataFrame, triplets: pl.DataFrame, passages: pl.DataFrame, folder: Path) -> dict[str, str]:
    """Write each configuration's refined set as FlagEmbedding JSONL, Tevatron JSONL and a
    sentence-transformers (anchor, positive, negative) Parquet; returns {file kind: path}.

    Files are written under a temporary name and renamed, so a reader never sees half a file."""
    folder = Path(folder)
    texts = _texts(passages)
    queries = dict(triplets.select("query_id", "query_text").iter_rows())
    written: dict[str, str] = {}
    for (config,), group in refined.group_by("config", maintain_order=True):
        target = folder / config.replace("+", "_plus_")
        target.mkdir(parents=True, exist_ok=True)
        bge, tevatron, rows = [], [], []
        for query_id, positives, negatives in group.select("query_id", "positive_ids", "negative_ids").iter_rows():
            query = queries[query_id]
            full = {d: passage_text(*texts[d]) for d in positives + negatives}
            bge.append({"query": query, "pos": [full[d] for d in positives], "neg": [full[d] for d in negatives]})
            tevatron.append({
                "query_id": query_id, "query": query,
                "positive_passages": [{"docid": d, "title": texts[d][0], "text": texts[d][1]} for d in positives],
                "negative_passages": [{"docid": d, "title": texts[d][0], "text": texts[d][1]} for d in negatives],
            })
            rows.extend((query, full[p], full[n]) for p in positives for n in negatives)
        outputs = {
            "flagembedding": (target / "flagembedding.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in bge) + "\n"),
            "tevatron": (target / "tevatron.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in tevatron) + "\n"),
        }
        for kind, (path, content) in outputs.items():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content, encoding="utf-8")
            os.replace(tmp, path)
            written[f"{config}/{kind}"] = str(path)
        parquet = target / "sentence_transformers.parquet"
        tmp = parquet.with_name(f".{parquet.name}.tmp")
        pl.DataFrame(rows, schema={"anchor": pl.String, "positive": pl.String, "negative": pl.String}, orient="row").write_parquet(tmp)
        os.replace(tmp, parquet)
        written[f"{config}/sentence_transformers"] = str(parquet)
    return written
