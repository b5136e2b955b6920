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

The package's modules: `truths` (audit sets and their labels), `judges` (the reference
judges), `scoring` (audit table and metrics), `report` (Markdown and chart); this module
holds the configuration and `run_audit`, and re-exports every public name of the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from arhn_assets.core import refine
from arhn_assets.core.audit.judges import (
    FIRST_SENTENCE,
    FIRST_WORDS,
    REPLAY_GRADES,
    REPLAY_POSITIVE_GRADE,
    oracle_judgments,
    replay_judgments,
    scripted_judgments,
    verbatim_span,
)
from arhn_assets.core.audit.report import audit_chart, audit_markdown
from arhn_assets.core.audit.scoring import (
    AUDIT_SCHEMA,
    AUDITED_CONFIGS,
    EXPECTED,
    FLAGGING_DECISIONS,
    RECALL_LEVELS,
    SCORES_SCHEMA,
    agreement,
    audit_scores,
    audit_table,
    bucket_labels,
    score_quality,
)
from arhn_assets.core.audit.truths import (
    DOC_NUMBER,
    LABELS_SCHEMA,
    VERDICT_BLOCK,
    VERDICT_LIST,
    AuditSet,
    RlhnVerdict,
    label_candidates,
    parse_rlhn_verdict,
    planted_audit_set,
    planted_false_negatives,
    rlhn_audit_set,
    rlhn_verdicts,
)
from arhn_assets.core.beir_io import BeirDataset
from arhn_assets.core.embeddings import Encoder
from arhn_assets.core.instructions import resolve_instruction
from arhn_assets.core.mining import MiningConfig, mine_negatives
from arhn_assets.core.rankings import RankOn
from arhn_assets.core.sampling import QuerySample
from arhn_assets.core.snippets import SnippetMode

__all__ = [
    # truths
    "AuditSet",
    "LABELS_SCHEMA",
    "RlhnVerdict",
    "VERDICT_BLOCK",
    "VERDICT_LIST",
    "DOC_NUMBER",
    "planted_false_negatives",
    "planted_audit_set",
    "label_candidates",
    "parse_rlhn_verdict",
    "rlhn_verdicts",
    "rlhn_audit_set",
    # judges
    "FIRST_SENTENCE",
    "FIRST_WORDS",
    "REPLAY_GRADES",
    "REPLAY_POSITIVE_GRADE",
    "verbatim_span",
    "scripted_judgments",
    "oracle_judgments",
    "replay_judgments",
    # scoring
    "AUDITED_CONFIGS",
    "FLAGGING_DECISIONS",
    "EXPECTED",
    "AUDIT_SCHEMA",
    "RECALL_LEVELS",
    "SCORES_SCHEMA",
    "bucket_labels",
    "audit_table",
    "agreement",
    "score_quality",
    "audit_scores",
    # report
    "audit_markdown",
    "audit_chart",
    # orchestration
    "AuditConfig",
    "AuditResult",
    "LLMStage",
    "run_audit",
]


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
    # Mining (qrels): no positive-aware margin by default. The margin removes the candidates
    # scoring closest to the positive, the very false negatives the judge is audited on; set
    # it to the pipeline's 0.05 to audit the judge on what refinement will actually see.
    num_negatives: int = 10
    relative_margin: float | None = None
    rank_bucket_edges: tuple[int, ...] = (3, 10, 30)
    # The modes under audit (judge 'llm'), as the pipeline's stages take them: stage 1's mode,
    # what stage 2 ranks on (answer_probability: pointwise, no stage-2 call), what counts as
    # answering for F (and for R where R must answer too, as in `make run`), and the task
    # instruction (None: the dataset's default; '' = none).
    snippet_mode: SnippetMode = "sentence"
    rank_on: RankOn = "passage"
    answered_by: Literal["snippet", "answer_probability"] = "snippet"
    answer_threshold: float = 0.5
    relabel_requires_snippet: bool = False
    instruction: str | None = None

    def __post_init__(self):
        if self.judge == "oracle" and self.truth != "qrels":
            raise ValueError("the oracle judge answers from qrels: it needs truth='qrels'")
        if self.judge == "replay" and self.truth != "verdicts":
            raise ValueError(
                "the replay judge answers with recorded verdicts: it needs truth='verdicts' and a verdicts_file"
            )
        if self.truth == "verdicts" and not self.verdicts_file:
            raise ValueError("truth='verdicts' needs verdicts_file: an RLHN judgment file (.jsonl or .jsonl.gz)")
        if list(self.rank_bucket_edges) != sorted(set(self.rank_bucket_edges)) or any(
            e < 1 for e in self.rank_bucket_edges
        ):
            raise ValueError(f"rank_bucket_edges must be increasing positive ranks, got {list(self.rank_bucket_edges)}")


@dataclass
class AuditResult:
    table: pl.DataFrame  # AUDIT_SCHEMA
    scores: pl.DataFrame  # SCORES_SCHEMA: agreement per configuration ('all') and mining-rank bucket
    facts: dict[str, object] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    # What the judge judged and said: candidates, triplets, passages, snippets and rankings
    # (refine.decide takes them to build other configurations, e.g. a baseline to train).
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)


# Runs an LLM stage ('answer_snippets' or 'answerability_rankings') on frames named as
# workers.llm_stage takes them, with the stage's options; returns its frame and the model identity.
LLMStage = Callable[[str, dict[str, pl.DataFrame], dict], tuple[pl.DataFrame, str]]


@dataclass
class _Prepared:
    """The audit set with the candidates the judge judges and the passages it reads."""

    audit: AuditSet
    candidates: pl.DataFrame
    passages: pl.DataFrame
    qrels: pl.DataFrame | None
    facts: dict[str, object]


def _prepare(
    config: AuditConfig,
    dataset: str,
    beir: BeirDataset | None,
    verdicts_path: Path | None,
    encoder: Encoder | None,
    sample: QuerySample,
    instruction: str,
) -> _Prepared:
    """Planted false negatives mined back from the corpus (qrels), or the recorded lists (verdicts)."""
    if config.truth == "verdicts":
        audit = rlhn_audit_set(verdicts_path, dataset, sample, instruction)
        if audit.triplets.height == 0:
            problems = "; ".join(audit.problems[:3] or ["the file is empty"])
            raise ValueError(f"{verdicts_path} holds no valid RLHN judgment record; {problems}")
        return _Prepared(audit, audit.candidates, audit.passages, None, {"verdicts": str(verdicts_path)})
    split = config.split or beir.training_split()
    qrels = beir.qrels(split)
    audit = planted_audit_set(dataset, beir.queries, qrels, config.min_score, config.all_queries, sample, instruction)
    if audit.triplets.height == 0:
        raise ValueError(
            f"{beir.root / 'qrels' / f'{split}.tsv'} has no query with two or more documents scored "
            f">= {config.min_score} (and a text in queries.jsonl): no false negative to plant; lower min_score "
            "or choose another split"
        )
    mining = MiningConfig(num_negatives=config.num_negatives, relative_margin=config.relative_margin)
    candidates = mine_negatives(audit.triplets, beir.corpus, encoder, mining).candidates
    facts = {
        "qrels": f"{split} (score >= {config.min_score})",
        "mining": f"{config.num_negatives} negatives, relative_margin={config.relative_margin}",
    }
    return _Prepared(audit, candidates, beir.corpus, qrels, facts)


def _judge(
    config: AuditConfig, prepared: _Prepared, verdicts_path: Path | None, llm_stage: LLMStage | None, instruction: str
) -> tuple[pl.DataFrame, pl.DataFrame, str, dict[str, object]]:
    """The judge's snippets, rankings and identity, and what was audited of it."""
    candidates, passages = prepared.candidates, prepared.passages
    if config.judge == "oracle":
        snippets, rankings = oracle_judgments(candidates, passages, prepared.qrels, config.min_score)
        return snippets, rankings, rankings["model"][0] if rankings.height else "oracle", {}
    if config.judge == "replay":
        snippets, rankings = replay_judgments(candidates, passages, prepared.audit.labels, verdicts_path.name)
        return snippets, rankings, f"replay:{verdicts_path.name}", {}
    frames = {"candidates": candidates, "triplets": prepared.audit.triplets, "passages": passages}
    snippets, model = llm_stage("answer_snippets", frames, {"mode": config.snippet_mode})
    rankings, _ = llm_stage("answerability_rankings", {**frames, "snippets": snippets}, {"rank_on": config.rank_on})
    threshold = f" >= {config.answer_threshold}" if config.answered_by != "snippet" else ""
    facts = {
        "stage 1": f"{config.snippet_mode} mode",
        "ranking": config.rank_on,
        "answered by": config.answered_by + threshold,
        "R must answer": "yes" if config.relabel_requires_snippet else "no",
        "instruction": instruction or "(none)",
    }
    return snippets, rankings, model, facts


def run_audit(
    config: AuditConfig,
    dataset: str,
    beir: BeirDataset | None,
    verdicts_path: Path | None,
    encoder: Encoder | None,
    llm_stage: LLMStage | None,
    sample: QuerySample = QuerySample(),
) -> AuditResult:
    """Build the audit set (the queries `sample` picks), judge it with `config.judge`, decide as
    refinement does, and score.

    beir + encoder: the dataset and mining model (truth 'qrels'); verdicts_path: the RLHN file
    (truth 'verdicts'); llm_stage: the configured LLM (judge 'llm')."""
    instruction = resolve_instruction(beir.name if beir is not None else dataset, config.instruction)
    prepared = _prepare(config, dataset, beir, verdicts_path, encoder, sample, instruction)
    snippets, rankings, model, judge_facts = _judge(config, prepared, verdicts_path, llm_stage, instruction)
    judged = prepared.candidates.filter(pl.col("query_id").is_in(rankings["query_id"].implode()))
    # Every flag counts: no query is dropped for having many (max_flagged) in an audit.
    refining = refine.RefineConfig(
        configs=AUDITED_CONFIGS,
        max_flagged=None,
        answered_by=config.answered_by,
        answer_threshold=config.answer_threshold,
        relabel_requires_snippet=config.relabel_requires_snippet,
    )
    decisions = refine.decide(judged, snippets, rankings, refining)
    labels = label_candidates(judged, prepared.audit.labels, default="negative" if config.truth == "qrels" else "none")
    table = audit_table(decisions, labels, config.truth, config.judge, model, config.rank_bucket_edges)
    facts = {"dataset": dataset, "judge": config.judge, "truth": config.truth, **prepared.facts, **judge_facts}
    if config.truth == "qrels":
        planted = prepared.audit.labels.filter(pl.col("query_id").is_in(rankings["query_id"].implode()))
        found = labels.filter(pl.col("label") == "planted").height
        facts["planted false negatives found by mining"] = f"{found} of {planted.height}"
    facts |= {
        "model": model,
        "queries judged": rankings.height,
        "negatives judged": labels.height,
        "invalid rankings": rankings.filter(pl.col("status") != "ok").height,
        "grounded snippets": f"{snippets.filter(pl.col('status') == 'answer').height} of {snippets.height}",
    }
    frames = {
        "candidates": judged,
        "triplets": prepared.audit.triplets,
        "passages": prepared.passages,
        "snippets": snippets,
        "rankings": rankings,
    }
    return AuditResult(table, audit_scores(table), facts, prepared.audit.problems, frames)
