"""Judge audit: how well the relabeling LLM finds false negatives whose truth is known.

Two sources of truth, both independent of the LLM under audit:
- planted false negatives: a query with several relevant documents in its qrels keeps one as
  the positive; the others, mined back as candidates, are false negatives known from human
  labels (`planted_false_negatives`);
- recorded verdicts of another judge: RLHN's GPT-4o cascade, whose `<better>` documents should
  become positives and whose `<worse>` documents are relevant but not preferred (`rlhn_verdicts`).

`agreement` scores a configuration's flags against such a truth with scikit-learn's metrics.
(The Dagster asset that runs the audit end to end is still to come; see the README.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

# What each configuration does to a negative it flags (core/refine.py's decisions).
FLAGGING_DECISIONS = {
    "R": {"relabel_positive"},
    "F": {"filter_ambiguous"},
    "R+F": {"relabel_positive", "filter_ambiguous"},
}
VERDICT_BLOCK = re.compile(r"<verdict>(?P<body>.*?)</verdict>", re.DOTALL)
VERDICT_LIST = r"<{tag}>[^\[]*\[(?P<docs>[^\]]*)\]\s*</{tag}>"
DOC_NUMBER = re.compile(r"Doc\s*\((\d+)\)")


def planted_false_negatives(qrels: pl.DataFrame, min_score: int = 1) -> pl.DataFrame:
    """Per query with at least two documents scored >= `min_score` (graded qrels: raise it to
    count only the more relevant ones): the positive kept (the first listed) and the relevant
    documents planted among the candidates as false negatives.

    qrels: query_id, doc_id, score (beir_io's QRELS_SCHEMA)."""
    relevant = qrels.filter(pl.col("score") >= min_score).unique(["query_id", "doc_id"], keep="first", maintain_order=True)
    return (
        relevant.group_by("query_id", maintain_order=True)
        .agg(doc_ids=pl.col("doc_id"))
        .filter(pl.col("doc_ids").list.len() >= 2)
        .select("query_id", kept_positive=pl.col("doc_ids").list.first(), planted=pl.col("doc_ids").list.slice(1))
    )


@dataclass(frozen=True)
class RlhnVerdict:
    better: list[int]  # 1-based numbers of the negatives preferred over the ground truth
    worse: list[int]  # relevant, but not preferred


def parse_rlhn_verdict(response: str) -> RlhnVerdict:
    """The `<verdict>` block of an RLHN response (`Doc (n)` is the n-th negative passage)."""
    block = VERDICT_BLOCK.search(response)
    if block is None:
        raise ValueError("no <verdict>...</verdict> block in the response")
    lists = {}
    for tag in ("better", "worse"):
        found = re.search(VERDICT_LIST.format(tag=tag), block["body"], re.DOTALL)
        if found is None:
            raise ValueError(f"the verdict has no <{tag}> [...] </{tag}> list")
        lists[tag] = [int(n) for n in DOC_NUMBER.findall(found["docs"])]
    return RlhnVerdict(**lists)


def rlhn_verdicts(records: list[dict], source: str) -> tuple[pl.DataFrame, list[str]]:
    """One row per (query, negative) of RLHN judgment records: the verdict on it, 'better',
    'worse' or 'none'; and the records skipped, by file and line: a verdict that does not parse,
    or names a document number that is not one of the record's negatives."""
    rows, problems = [], []
    for line, record in enumerate(records, start=1):
        negatives = record.get("negative_passage_ids") or [p["docid"] for p in record.get("negative_passages", [])]
        try:
            verdict = parse_rlhn_verdict(record.get("response") or "")
            outside = sorted(n for n in verdict.better + verdict.worse if not 1 <= n <= len(negatives))
            if outside:
                raise ValueError(f"Doc numbers {outside} outside 1..{len(negatives)}")
        except ValueError as error:
            problems.append(f"{source}:{line} [response] {error}")
            continue
        for number, doc_id in enumerate(negatives, start=1):
            label = "better" if number in verdict.better else "worse" if number in verdict.worse else "none"
            rows.append((str(record["query_id"]), str(doc_id), number, label))
    frame = pl.DataFrame(rows, schema={"query_id": pl.String, "doc_id": pl.String, "position": pl.Int64, "verdict": pl.String}, orient="row")
    return frame, problems


def agreement(decisions: pl.DataFrame, truth: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """Precision, recall, F1 and Cohen's kappa of each configuration's flags against `truth`.

    decisions: relabel_decisions (config, query_id, doc_id, original_label, decision);
    truth: query_id, doc_id, is_false_negative (bool), and the `by` column if given (e.g. a
    mining-rank bucket), for one row per group. Only judged negatives present in both count."""
    from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

    negatives = decisions.filter(pl.col("original_label") == "negative").join(truth, on=["query_id", "doc_id"], how="inner")
    rows = []
    for config, flagging in FLAGGING_DECISIONS.items():
        judged = negatives.filter(pl.col("config") == config).with_columns(flagged=pl.col("decision").is_in(list(flagging)))
        groups = judged.group_by(by, maintain_order=True) if by else [((None,), judged)]
        for (group,), frame in groups:
            actual, predicted = frame["is_false_negative"].to_list(), frame["flagged"].to_list()
            if not actual:
                continue
            precision, recall, f1, _ = precision_recall_fscore_support(actual, predicted, average="binary", zero_division=0.0)
            # kappa is undefined when both raters give a single label; report agreement as 1 then.
            kappa = cohen_kappa_score(actual, predicted) if len(set(actual) | set(predicted)) > 1 else 1.0
            rows.append({
                "config": config, **({by: group} if by else {}), "candidates": len(actual),
                "false_negatives": sum(actual), "flagged": sum(predicted),
                "true_positives": sum(a and p for a, p in zip(actual, predicted)),
                "precision": float(precision), "recall": float(recall), "f1": float(f1), "kappa": float(kappa),
            })
    return pl.DataFrame(rows)
