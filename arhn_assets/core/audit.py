"""Judge audit: how well the relabeling LLM finds false negatives whose truth is known.

Two truths, both independent of the LLM under audit:
- `qrels`: planted false negatives. A query with several relevant documents keeps one as its
  positive; mined from the whole corpus without excluding the others, those come back as
  candidates that human labels say are false negatives (`planted_audit_set`);
- `verdicts`: recorded verdicts of another judge, RLHN's GPT-4o cascade, whose `<better>`
  documents should become positives and whose `<worse>` ones are relevant but not preferred
  (`rlhn_audit_set`).

Judges other than the configured LLM, for the audit only (never for refinement):
- `oracle`: answers from qrels (`oracle_judgments`), the upper bound on planted truth;
- `replay`: answers with the recorded verdicts (`replay_judgments`).
With either, the audit must score (nearly) perfectly: that proves the machinery, so a low score
of the LLM is the LLM's. The judges' snippets and rankings are turned into flags by the same
`refine.decide` the pipeline runs, and `agreement` scores the flags with scikit-learn's metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from arhn_assets.core import refine
from arhn_assets.core.beir_io import BeirDataset, iter_jsonl
from arhn_assets.core.embeddings import Encoder
from arhn_assets.core.ingest import TRIPLETS_SCHEMA
from arhn_assets.core.mining import CANDIDATES_SCHEMA, MiningConfig, mine_negatives
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.rankings import RANKINGS_SCHEMA, RankOn
from arhn_assets.core.report import frame_markdown, save_png
from arhn_assets.core.snippets import SNIPPETS_SCHEMA, SnippetMode
from arhn_assets.core.triplet_formats import PassageRegistry, RowError, parse_json_record

AUDITED_CONFIGS = ("R", "F", "R+F")
# What each configuration does to a negative it flags (core/refine.py's decisions).
FLAGGING_DECISIONS = {
    "R": {"relabel_positive"},
    "F": {"filter_ambiguous"},
    "R+F": {"relabel_positive", "filter_ambiguous"},
}
# The labels a configuration should flag, per truth. Binary qrels cannot tell "more direct than
# the positive" (R) from "relevant, less direct" (F), so on planted truth every configuration is
# scored against every planted document; RLHN's verdicts make the distinction.
EXPECTED = {
    "qrels": {"R": {"planted"}, "F": {"planted"}, "R+F": {"planted"}},
    "verdicts": {"R": {"better"}, "F": {"worse"}, "R+F": {"better", "worse"}},
}
AUDIT_SCHEMA = {
    "dataset": pl.String,
    "judge": pl.String,  # llm | oracle | replay
    "model": pl.String,  # the judge's identity (model name and hash, or oracle:/replay: source)
    "truth": pl.String,  # qrels | verdicts
    "config": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "label": pl.String,  # qrels: planted | negative; verdicts: better | worse | none
    "mining_rank": pl.Int64,  # rank in the corpus search (qrels) or position in the recorded list
    "rank_bucket": pl.String,
    "snippet_status": pl.String,
    "answer_probability": pl.Float64,  # stage 1's P(not NO_ANSWER); null for judges without one
    "llm_rank": pl.Int64,
    "positive_rank": pl.Int64,
    "ranking_status": pl.String,
    "decision": pl.String,
    "flagged": pl.Boolean,  # the configuration relabeled or filtered this negative
    "expected": pl.Boolean,  # the truth says it should have
}
LABELS_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "label": pl.String, "mining_rank": pl.Int64}

VERDICT_BLOCK = re.compile(r"<verdict>(?P<body>.*?)</verdict>", re.DOTALL)
VERDICT_LIST = r"<{tag}>[^\[]*\[(?P<docs>[^\]]*)\]\s*</{tag}>"
DOC_NUMBER = re.compile(r"Doc\s*\((\d+)\)")
# A verbatim span for the reference judges' snippets: the first sentence, else the first 40 words.
FIRST_SENTENCE = re.compile(r"\S.*?[.!?](?=\s|$)", re.DOTALL)
FIRST_WORDS = re.compile(r"\S+(?:\s+\S+){0,39}")


@dataclass
class AuditSet:
    """What a judge is audited on: the triplets and candidates it judges, the passages it reads,
    and the truth's label of every candidate negative (`LABELS_SCHEMA`)."""

    triplets: pl.DataFrame
    labels: pl.DataFrame
    candidates: pl.DataFrame | None = None  # None: to be mined from the corpus
    passages: pl.DataFrame | None = None  # None: the dataset's corpus
    problems: tuple[str, ...] = ()


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


def planted_audit_set(
    dataset: str, queries: pl.DataFrame, qrels: pl.DataFrame, min_score: int = 1,
    all_queries: bool = False, max_queries: int | None = None, instruction: str = "",
) -> AuditSet:
    """Triplets whose one positive is the first relevant document of each query, so mining sees
    the other relevant ones as candidates; `labels` lists those planted documents.

    By default only queries with planted documents are audited; `all_queries` adds the queries
    with one relevant document (ordinary negatives only), e.g. to train on the whole split."""
    planted = planted_false_negatives(qrels, min_score)
    if all_queries:
        relevant = qrels.filter(pl.col("score") >= min_score).unique(["query_id", "doc_id"], keep="first", maintain_order=True)
        positives = relevant.group_by("query_id", maintain_order=True).agg(kept_positive=pl.col("doc_id").first())
    else:
        positives = planted.select("query_id", "kept_positive")
    texts = queries.select("query_id", query_text="text")
    triplets = positives.join(texts, on="query_id", how="inner", maintain_order="left")
    if max_queries is not None:
        triplets = triplets.head(max_queries)
    triplets = triplets.select(
        dataset=pl.lit(dataset), query_id="query_id", query_text="query_text",
        positive_ids=pl.concat_list("kept_positive"), provided_negative_ids=pl.lit([], dtype=pl.List(pl.String)),
        instruction=pl.lit(instruction),
    )
    labels = (
        planted.filter(pl.col("query_id").is_in(triplets["query_id"].implode()))
        .explode("planted")
        .select("query_id", doc_id="planted", label=pl.lit("planted"), mining_rank=pl.lit(None, dtype=pl.Int64))
    )
    return AuditSet(triplets=_as_triplets(triplets), labels=labels)


def _as_triplets(frame: pl.DataFrame) -> pl.DataFrame:
    missing = {name: pl.lit(None, dtype=dtype) for name, dtype in TRIPLETS_SCHEMA.items() if name not in frame.columns}
    return frame.with_columns(**missing).select(TRIPLETS_SCHEMA.keys()).cast(TRIPLETS_SCHEMA)


def label_candidates(candidates: pl.DataFrame, labels: pl.DataFrame, default: str = "negative") -> pl.DataFrame:
    """Every judged negative with its truth label (`default` where the truth names none) and
    its mining rank (the truth's own, e.g. a recorded list position, where it has one)."""
    negatives = candidates.filter(pl.col("source").is_in(["mined", "provided"])).select("query_id", "doc_id", "rank")
    return (
        negatives.join(labels, on=["query_id", "doc_id"], how="left", maintain_order="left")
        .select("query_id", "doc_id", label=pl.col("label").fill_null(default), mining_rank=pl.coalesce("mining_rank", "rank"))
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


def rlhn_verdicts(records: Iterable[tuple[int, dict]], source: str) -> tuple[pl.DataFrame, list[str]]:
    """One row per (query, negative) of numbered RLHN judgment records: the verdict on it,
    'better', 'worse' or 'none'; and the records skipped, by file and line: a verdict that does
    not parse, or names a document number that is not one of the record's negatives."""
    rows, problems = [], []
    for line, record in records:
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


def rlhn_audit_set(path: Path, dataset: str, max_queries: int | None = None, instruction: str = "") -> AuditSet:
    """The records of an RLHN judgment file (Tevatron lines plus the judge's `response`) as an
    audit set: each record's positives and negatives, in the recorded order, are the candidates,
    and its verdicts the labels. A line that is not a valid Tevatron record or whose verdict does
    not parse is skipped and named in `problems` by file, line and field."""
    registry = PassageRegistry()
    triplets, candidates, numbered, problems = [], [], [], []
    for line, record, issue in iter_jsonl(path):
        if issue is not None:
            problems.append(f"{issue.file}:{issue.line} [{issue.field}] {issue.reason}")
            continue
        if max_queries is not None and len(triplets) >= max_queries:
            break
        mark = len(registry.added)
        try:
            parsed = parse_json_record(record, registry, str(path), line)
        except RowError as error:
            registry.rollback(mark)
            problems.append(f"{path}:{line} [{error.field}] {error.reason}")
            continue
        verdicts, skipped = rlhn_verdicts([(line, {**record, "negative_passage_ids": parsed.provided_negative_ids})], str(path))
        if skipped:
            registry.rollback(mark)
            problems.extend(skipped)
            continue
        numbered.append(verdicts)
        triplets.append({**dict.fromkeys(TRIPLETS_SCHEMA), "dataset": dataset, "query_id": parsed.query_id,
                         "query_text": parsed.query_text, "positive_ids": parsed.positive_ids,
                         "provided_negative_ids": parsed.provided_negative_ids, "source": parsed.source, "instruction": instruction,
                         "source_file": str(path), "source_line": line})
        candidates += [(dataset, parsed.query_id, d, "positive", None, None, None) for d in parsed.positive_ids]
        candidates += [(dataset, parsed.query_id, d, "provided", i, None, None) for i, d in enumerate(parsed.provided_negative_ids, start=1)]
    labels = (
        pl.concat(numbered).select("query_id", "doc_id", label="verdict", mining_rank="position")
        .unique(["query_id", "doc_id"], keep="first", maintain_order=True)
        if numbered else pl.DataFrame(schema=LABELS_SCHEMA)
    )
    return AuditSet(
        triplets=pl.DataFrame(triplets, schema=TRIPLETS_SCHEMA),
        labels=labels,
        candidates=pl.DataFrame(candidates, schema=CANDIDATES_SCHEMA, orient="row").unique(["query_id", "doc_id"], keep="first", maintain_order=True),
        passages=registry.to_frame(dataset),
        problems=tuple(problems),
    )


def verbatim_span(text: str) -> str:
    """A span copied from `text`, as a reference judge's snippet: its first sentence, else its
    first 40 words (the recorded verdicts and the qrels say *that* a passage answers, not where)."""
    match = FIRST_SENTENCE.match(text.strip()) or FIRST_WORDS.search(text)
    return match.group(0) if match else ""


def scripted_judgments(candidates: pl.DataFrame, passages: pl.DataFrame, grades: dict[tuple[str, str], int], model: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage 1 and stage 2 answers of a reference judge that knows each candidate's grade:
    grade > 0 gets a verbatim snippet, and each query's candidates are ranked by grade, with a
    positive after the candidates of its own grade (one as relevant as the positive is promoted,
    not filtered: that is what the truth says of it), then in candidate order.
    Returns frames with the pipeline's `SNIPPETS_SCHEMA` and `RANKINGS_SCHEMA`."""
    texts = {d: (x or t or "") for d, t, x in passages.select("doc_id", "title", "text").iter_rows()}
    judged = candidates.filter(pl.col("source") != "reserve")
    snippets, rankings = [], []
    for (dataset, query_id), group in judged.group_by("dataset", "query_id", maintain_order=True):
        docs = group.select("doc_id", "source").rows()
        for doc_id, source in docs:
            grade = grades.get((query_id, doc_id), 0)
            answer = verbatim_span(texts[doc_id]) if grade > 0 else None
            snippets.append((dataset, query_id, doc_id, source == "positive", answer, "answer" if answer else "no_answer",
                             1.0 if answer else 0.0, answer or "NO_ANSWER", model, "reference", 0, 0, 0, False))
        order = sorted(range(len(docs)), key=lambda i: (-grades.get((query_id, docs[i][0]), 0), docs[i][1] == "positive", i))
        ranking = [docs[i][0] for i in order]
        positive_rank = min((r for r, i in enumerate(order, start=1) if docs[i][1] == "positive"), default=None)
        rankings.append((dataset, query_id, ranking, positive_rank, "ok", 1, ["ok"], model, 0))
    return (pl.DataFrame(snippets, schema=SNIPPETS_SCHEMA, orient="row"),
            pl.DataFrame(rankings, schema=RANKINGS_SCHEMA, orient="row"))


def oracle_judgments(candidates: pl.DataFrame, passages: pl.DataFrame, qrels: pl.DataFrame, min_score: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `oracle` judge: a candidate answers when its qrels score is >= `min_score`, and the
    ranking follows the qrels scores. An audit tool: it needs the labels refinement lacks."""
    grades = {(q, d): s for q, d, s in qrels.filter(pl.col("score") >= min_score).iter_rows()}
    return scripted_judgments(candidates, passages, grades, f"oracle:qrels>={min_score}")


REPLAY_GRADES = {"better": 3, "worse": 1, "none": 0}
REPLAY_POSITIVE_GRADE = 2


def replay_judgments(candidates: pl.DataFrame, passages: pl.DataFrame, labels: pl.DataFrame, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `replay` judge: a recorded verdict, as answers. `better` documents rank above the
    positive, `worse` ones below it and both carry a snippet; `none` ones answer nothing."""
    grades = {(q, d): REPLAY_GRADES[label] for q, d, label in labels.select("query_id", "doc_id", "label").iter_rows()}
    positives = candidates.filter(pl.col("source") == "positive").select("query_id", "doc_id").rows()
    grades |= {key: REPLAY_POSITIVE_GRADE for key in positives}
    return scripted_judgments(candidates, passages, grades, f"replay:{source}")


def bucket_labels(edges: Iterable[int]) -> list[str]:
    """'1-3', '4-10', '11-30', '31+' for edges (3, 10, 30): rank buckets, upper edges inclusive."""
    lows = [1, *(e + 1 for e in edges)]
    return [f"{low}-{edge}" for low, edge in zip(lows, edges)] + [f"{lows[-1]}+"]


def audit_table(decisions: pl.DataFrame, labels: pl.DataFrame, truth: str, judge: str, model: str,
                bucket_edges: Iterable[int] = (3, 10, 30)) -> pl.DataFrame:
    """One row per (configuration, judged negative): the decision, whether it flags the
    negative, and whether the truth says it should (`AUDIT_SCHEMA`).

    decisions: `refine.decide`'s rows; labels: `label_candidates`' rows (query_id, doc_id,
    label, mining_rank); truth: 'qrels' or 'verdicts' (which labels each configuration should flag)."""
    edges = tuple(bucket_edges)
    expected = EXPECTED[truth]
    frames = []
    for config in AUDITED_CONFIGS:
        rows = decisions.filter((pl.col("config") == config) & (pl.col("original_label") == "negative"))
        frames.append(
            rows.join(labels, on=["query_id", "doc_id"], how="inner", maintain_order="left").with_columns(
                flagged=pl.col("decision").is_in(list(FLAGGING_DECISIONS[config])),
                expected=pl.col("label").is_in(list(expected[config])),
            )
        )
    table = pl.concat(frames).with_columns(
        judge=pl.lit(judge), model=pl.lit(model), truth=pl.lit(truth),
        rank_bucket=pl.col("mining_rank").cut(list(edges), labels=bucket_labels(edges)).cast(pl.String).fill_null("unranked"),
    )
    return table.select(AUDIT_SCHEMA.keys()).cast(AUDIT_SCHEMA)


def agreement(table: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """Per configuration (and `by` group, e.g. 'rank_bucket'): counts of candidates, expected
    and flagged negatives and their confusion matrix, precision, recall, F1 and Cohen's kappa
    of the flags against the truth (`audit_table`'s `flagged` and `expected` columns)."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    rows = []
    for config in AUDITED_CONFIGS:
        judged = table.filter(pl.col("config") == config)
        # Groups in rank order, so rank buckets read from the top of the mined list down.
        ordered = judged.sort("mining_rank", nulls_last=True, maintain_order=True)
        groups = ordered.group_by(by, maintain_order=True) if by else [((None,), judged)]
        for (group,), frame in groups:
            actual, predicted = frame["expected"].to_list(), frame["flagged"].to_list()
            if not actual:
                continue
            precision, recall, f1, _ = precision_recall_fscore_support(actual, predicted, average="binary", zero_division=0.0)
            # kappa is undefined when both raters give a single label; report agreement as 1 then.
            kappa = cohen_kappa_score(actual, predicted) if len(set(actual) | set(predicted)) > 1 else 1.0
            (tn, fp), (fn, tp) = confusion_matrix(actual, predicted, labels=[False, True])
            rows.append({
                "config": config, **({by: group} if by else {}), "candidates": len(actual),
                "expected": int(tp + fn), "flagged": int(tp + fp), "true_positives": int(tp), "false_positives": int(fp),
                "false_negatives": int(fn), "true_negatives": int(tn),
                "precision": float(precision), "recall": float(recall), "f1": float(f1), "kappa": float(kappa),
            })
    return pl.DataFrame(rows)


def score_quality(table: pl.DataFrame, recall_levels: Iterable[float] = (0.5, 0.8)) -> pl.DataFrame:
    """Per configuration: how well `answer_probability` alone orders the judged negatives, the
    expected ones first: average precision, ROC AUC, and the precision at each recall level (the
    best precision of any threshold that reaches it). Nulls where the judge gives no probability
    or the truth has a single label."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    rows = []
    for config in AUDITED_CONFIGS:
        frame = table.filter(pl.col("config") == config)
        actual, score = frame["expected"].to_list(), frame["answer_probability"].to_list()
        row: dict[str, object] = {"config": config}
        usable = bool(actual) and None not in score and len(set(actual)) == 2
        precision, recall, _ = precision_recall_curve(actual, score) if usable else ([], [], [])
        row["average_precision"] = float(average_precision_score(actual, score)) if usable else None
        row["roc_auc"] = float(roc_auc_score(actual, score)) if usable else None
        for level in recall_levels:
            reached = [p for p, r in zip(precision, recall) if r >= level]
            row[f"precision_at_recall_{level:g}"] = float(max(reached)) if reached else None
        rows.append(row)
    return pl.DataFrame(rows)


def audit_markdown(title: str, facts: dict[str, object], metrics: pl.DataFrame, by_rank: pl.DataFrame) -> str:
    """The audit report: what was audited, then per configuration the confusion counts and
    scores, overall and by mining rank."""
    lines = [f"# {title}", ""] + [f"- {name}: {value}" for name, value in facts.items()]
    for heading, frame in (("Per configuration", metrics), ("By mining rank", by_rank)):
        lines += ["", f"## {heading}", "", frame_markdown(frame.with_columns(pl.col(pl.Float64).round(4)), rows=200)]
    lines += ["", "Flagged = relabeled (R), filtered (F), either (R+F); expected = what the truth says of the negative.",
              "Precision, recall and F1 of the flags, and Cohen's kappa of flags vs truth (scikit-learn)."]
    return "\n".join(lines)


def audit_chart(metrics: pl.DataFrame, title: str, path: Path) -> bytes:
    """One confusion matrix per configuration and a precision/recall/F1 bar chart, as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    rows = metrics.to_dicts()
    figure, axes = plt.subplots(1, len(rows) + 1, figsize=(4 * (len(rows) + 1), 3.8), squeeze=False)
    for axis, row in zip(axes[0], rows):
        matrix = np.array([[row["true_negatives"], row["false_positives"]], [row["false_negatives"], row["true_positives"]]])
        ConfusionMatrixDisplay(matrix, display_labels=["clean", "false neg."]).plot(ax=axis, colorbar=False, values_format="d")
        axis.set(title=row["config"], xlabel="flagged by the judge", ylabel="truth")
    bars = axes[0][-1]
    scores = ("precision", "recall", "f1")
    for i, score in enumerate(scores):
        bars.bar([c + i * 0.27 for c in range(len(rows))], [row[score] for row in rows], 0.27, label=score)
    bars.set_xticks([c + 0.27 for c in range(len(rows))], [row["config"] for row in rows])
    bars.set(ylim=(0, 1.05), title="flags vs truth")
    bars.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    return save_png(figure, path)


@dataclass(frozen=True)
class AuditConfig:
    judge: Literal["llm", "oracle", "replay"] = "llm"
    truth: Literal["qrels", "verdicts"] = "qrels"
    # qrels: the split to plant from ('' = the training split, train else dev), the lowest
    # score that counts as relevant (graded qrels), and whether queries with a single relevant
    # document are audited too (they add ordinary negatives only).
    split: str = ""
    min_score: int = 1
    all_queries: bool = False
    # The BEIR folder to plant from ('' = the partition's own name), so audits of several judges
    # can live in partitions of their own, e.g. `scifact-qwen3` with beir_dataset 'scifact'.
    beir_dataset: str = ""
    # verdicts: an RLHN judgment file (.jsonl or .jsonl.gz); a relative path is looked up
    # under ARHN_DATA_DIR, e.g. rlhn_llm_judgments/fiqa.stage_2.gpt-4o.jsonl.gz
    verdicts_file: str = ""
    max_queries: int | None = None
    # Mining (qrels): no positive-aware margin by default. The margin removes the candidates
    # scoring closest to the positive, the very false negatives the judge is audited on; set
    # it to the pipeline's 0.05 to audit the judge on what refinement will actually see.
    num_negatives: int = 10
    relative_margin: float | None = None
    rank_bucket_edges: tuple[int, ...] = (3, 10, 30)
    # The modes under audit (judge 'llm'), as the pipeline's stages take them: stage 1's mode,
    # what stage 2 ranks on (answer_probability: pointwise, no stage-2 call), what counts as
    # answering for F, and the task instruction (None: the dataset's default; '' = none).
    snippet_mode: SnippetMode = "sentence"
    rank_on: RankOn = "passage"
    answered_by: Literal["snippet", "answer_probability"] = "snippet"
    answer_threshold: float = 0.5
    instruction: str | None = None
    # Recall levels at which the audit reports the precision of ranking negatives by answer_probability.
    recall_levels: tuple[float, ...] = (0.5, 0.8)

    def __post_init__(self):
        if self.judge == "oracle" and self.truth != "qrels":
            raise ValueError("the oracle judge answers from qrels: it needs truth='qrels'")
        if self.judge == "replay" and self.truth != "verdicts":
            raise ValueError("the replay judge answers with recorded verdicts: it needs truth='verdicts' and a verdicts_file")
        if self.truth == "verdicts" and not self.verdicts_file:
            raise ValueError("truth='verdicts' needs verdicts_file: an RLHN judgment file (.jsonl or .jsonl.gz)")
        if list(self.rank_bucket_edges) != sorted(set(self.rank_bucket_edges)) or any(e < 1 for e in self.rank_bucket_edges):
            raise ValueError(f"rank_bucket_edges must be increasing positive ranks, got {list(self.rank_bucket_edges)}")


@dataclass
class AuditResult:
    table: pl.DataFrame  # AUDIT_SCHEMA
    metrics: pl.DataFrame  # agreement per configuration
    by_rank: pl.DataFrame  # agreement per configuration and mining-rank bucket
    facts: dict[str, object] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    # What the judge judged and said: candidates, triplets, passages, snippets and rankings
    # (refine.decide takes them to build other configurations, e.g. a baseline to train).
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)


# Runs an LLM stage ('answer_snippets' or 'answerability_rankings') on frames named as
# workers.llm_stage takes them, with the stage's options; returns its frame and the model identity.
LLMStage = Callable[[str, dict[str, pl.DataFrame], dict], tuple[pl.DataFrame, str]]


def run_audit(config: AuditConfig, dataset: str, beir: BeirDataset | None, verdicts_path: Path | None,
              encoder: Encoder | None, llm_stage: LLMStage | None) -> AuditResult:
    """Build the audit set, judge it with `config.judge`, decide as refinement does, and score.

    beir + encoder: the dataset and mining model (truth 'qrels'); verdicts_path: the RLHN file
    (truth 'verdicts'); llm_stage: the configured LLM (judge 'llm')."""
    facts: dict[str, object] = {"dataset": dataset, "judge": config.judge, "truth": config.truth}
    instruction = resolve_instruction(beir.name if beir is not None else dataset, config.instruction)
    if config.truth == "qrels":
        split = config.split or beir.training_split()
        qrels = beir.qrels(split)
        audit = planted_audit_set(dataset, beir.queries, qrels, config.min_score, config.all_queries, config.max_queries, instruction)
        if audit.triplets.height == 0:
            raise ValueError(
                f"{beir.root / 'qrels' / f'{split}.tsv'} has no query with two or more documents scored >= {config.min_score} "
                "(and a text in queries.jsonl): no false negative to plant; lower min_score or choose another split"
            )
        mining = MiningConfig(num_negatives=config.num_negatives, relative_margin=config.relative_margin)
        candidates, passages = mine_negatives(audit.triplets, beir.corpus, encoder, mining).candidates, beir.corpus
        facts |= {"qrels": f"{split} (score >= {config.min_score})", "mining": f"{config.num_negatives} negatives, relative_margin={config.relative_margin}"}
    else:
        audit = rlhn_audit_set(verdicts_path, dataset, config.max_queries, instruction)
        if audit.triplets.height == 0:
            raise ValueError(f"{verdicts_path} holds no valid RLHN judgment record; " + "; ".join(audit.problems[:3] or ["the file is empty"]))
        candidates, passages = audit.candidates, audit.passages
        facts["verdicts"] = str(verdicts_path)
    if config.judge == "llm":
        frames = {"candidates": candidates, "triplets": audit.triplets, "passages": passages}
        snippets, model = llm_stage("answer_snippets", frames, {"mode": config.snippet_mode})
        rankings, _ = llm_stage("answerability_rankings", {**frames, "snippets": snippets}, {"rank_on": config.rank_on})
        facts |= {"stage 1": f"{config.snippet_mode} mode", "ranking": config.rank_on,
                  "answered by": config.answered_by + (f" >= {config.answer_threshold}" if config.answered_by != "snippet" else ""),
                  "instruction": instruction or "(none)"}
    elif config.judge == "oracle":
        snippets, rankings = oracle_judgments(candidates, passages, qrels, config.min_score)
        model = rankings["model"][0] if rankings.height else "oracle"
    else:
        snippets, rankings = replay_judgments(candidates, passages, audit.labels, verdicts_path.name)
        model = f"replay:{verdicts_path.name}"
    judged = candidates.filter(pl.col("query_id").is_in(rankings["query_id"].implode()))
    # Every flag counts: no query is dropped for having many (max_flagged) in an audit.
    refining = refine.RefineConfig(configs=AUDITED_CONFIGS, max_flagged=None, answered_by=config.answered_by,
                                   answer_threshold=config.answer_threshold)
    decisions = refine.decide(judged, snippets, rankings, refining)
    labels = label_candidates(judged, audit.labels, default="negative" if config.truth == "qrels" else "none")
    table = audit_table(decisions, labels, config.truth, config.judge, model, config.rank_bucket_edges)
    if config.truth == "qrels":
        planted = audit.labels.filter(pl.col("query_id").is_in(rankings["query_id"].implode()))
        facts["planted false negatives found by mining"] = f"{labels.filter(pl.col('label') == 'planted').height} of {planted.height}"
    facts |= {
        "model": model, "queries judged": rankings.height, "negatives judged": labels.height,
        "invalid rankings": rankings.filter(pl.col("status") != "ok").height,
        "grounded snippets": f"{snippets.filter(pl.col('status') == 'answer').height} of {snippets.height}",
    }
    frames = {"candidates": judged, "triplets": audit.triplets, "passages": passages, "snippets": snippets, "rankings": rankings}
    metrics = agreement(table).join(score_quality(table, config.recall_levels), on="config", how="left")
    return AuditResult(table, metrics, agreement(table, by="rank_bucket"), facts, audit.problems, frames)
