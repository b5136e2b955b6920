"""Judge audit matrix: each embedded judge, stage-1 mode and ranking mode against known false
negatives, through the real `judge_audit` asset (one Dagster partition per combination).

Truths: SciFact's planted false negatives (the first 24 training queries with several relevant
documents) and RLHN's GPT-4o verdicts on 17 FiQA queries. Judges: SmolLM2-135M and
Qwen2.5-Coder-1.5B (llama.cpp presets), plus the reference judge of each truth. Modes:
- stage 1: `span` (the paper's free span) or `sentence` (numbered sentences under a grammar);
- ranking: `listwise` (stage 2 on the passages; F = the snippet rule) or `pointwise` (by stage 1's
  answer_probability, no stage-2 call; answering = answer_probability >= 0.5, required for R too,
  as in `make run`);
- on SciFact, sentence mode again with the dataset's task instruction.

Combinations share the LLM call cache, so each call is made once; a combination's cold cost is the
time of the calls it needs, wherever they were first made (printed per stage). One run:
    python benchmarks/judge_audits.py [--only qwen] [--queries 24]
Writes benchmarks/results/judge_audits.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg  # noqa: E402

from arhn_assets.cli import pipeline_job  # noqa: E402
from arhn_assets.definitions import defs  # noqa: E402

RLHN = "rlhn_llm_judgments/fiqa.stage_2.gpt-4o.jsonl.gz"
JUDGES = {"smollm2": "smollm2-135m", "qwen": "qwen2.5-coder-1.5b"}
RANKINGS = {
    "listwise": {"rank_on": "passage", "answered_by": "snippet"},
    # make run's rule: R relabels a negative scored above the positive only if it answers too
    "pointwise": {
        "rank_on": "answer_probability",
        "answered_by": "answer_probability",
        "relabel_requires_snippet": True,
    },
}


@dataclass(frozen=True)
class Combination:
    truth: str  # scifact | rlhn
    judge: str  # smollm2 | qwen | reference
    mode: str = ""  # span | sentence
    ranking: str = ""  # listwise | pointwise
    instruction: bool = False

    @property
    def partition(self) -> str:
        parts = [f"audit-{self.truth}", self.judge, self.mode, self.ranking, "instr" if self.instruction else ""]
        return "-".join(p for p in parts if p)

    def run_config(self, queries: int) -> dict:
        truth = (
            {"truth": "qrels", "beir_dataset": "scifact"}
            if self.truth == "scifact"
            else {"truth": "verdicts", "verdicts_file": RLHN}
        )
        sample = {"query_sample": {"config": {"size": queries if self.truth == "scifact" else None}}}
        if self.judge == "reference":
            judge = {"judge": "oracle"} if self.truth == "scifact" else {"judge": "replay"}
            return {"ops": {"judge_audit": {"config": truth | judge}}, "resources": sample}
        audit = truth | {
            "judge": "llm",
            "snippet_mode": self.mode,
            "instruction": None if self.instruction else "",
            **RANKINGS[self.ranking],
        }
        return {
            "ops": {"judge_audit": {"config": audit}},
            "resources": {"language_model": {"config": {"model": JUDGES[self.judge]}}, **sample},
        }

    def stage_keys(self) -> dict[str, tuple]:
        """The calls each stage needs, by what decides them (shared between combinations)."""
        keys = {"answer_snippets": (self.truth, self.judge, self.mode, self.instruction)}
        if self.ranking == "listwise":
            keys["answerability_rankings"] = (self.truth, self.judge, self.instruction)
        return keys


def combinations(only: str | None) -> list[Combination]:
    """The references first, then the audits in order of what they tell for their cost: sentence
    mode on both truths (the larger judge first), the small judge's span mode, the instruction's
    effect, and the large judge's span mode last."""
    judges = [j for j in ("qwen", "smollm2") if not only or j == only]
    both = [(truth, ranking) for truth in ("scifact", "rlhn") for ranking in RANKINGS]
    out = [Combination("scifact", "reference"), Combination("rlhn", "reference")]
    out += [Combination(truth, judge, "sentence", ranking) for judge in judges for truth, ranking in both]
    out += [Combination(truth, "smollm2", "span", ranking) for truth, ranking in both if "smollm2" in judges]
    out += [Combination("scifact", judge, "sentence", "pointwise", instruction=True) for judge in reversed(judges)]
    out += [Combination(truth, "qwen", "span", ranking) for truth, ranking in reversed(both) if "qwen" in judges]
    out += [Combination("scifact", judge, "sentence", "listwise", instruction=True) for judge in reversed(judges)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(JUDGES), help="audit one judge (and the references)")
    parser.add_argument("--truth", choices=["scifact", "rlhn"], help="audit against one truth only")
    parser.add_argument("--mode", choices=["sentence", "span"], help="audit one stage-1 mode only")
    parser.add_argument("--ranking", choices=sorted(RANKINGS), help="audit one ranking only")
    parser.add_argument("--instruction", choices=["yes", "no"], help="with or without the task instruction only")
    parser.add_argument("--queries", type=int, default=24, help="SciFact queries with planted false negatives")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "judge_audits.json")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    stage_seconds: dict[str, float] = {}  # cold cost of each stage's calls, by stage key
    instance = dg.DagsterInstance.get()
    chosen = [
        c
        for c in combinations(args.only)
        if (not args.truth or c.truth == args.truth)
        and (not args.mode or c.mode in ("", args.mode))
        and (not args.ranking or c.ranking in ("", args.ranking))
        and (not args.instruction or c.judge == "reference" or c.instruction == (args.instruction == "yes"))
    ]
    for combo in chosen:
        instance.add_dynamic_partitions("dataset", [combo.partition])
        began = time.perf_counter()
        outcome = pipeline_job(defs(), "judge_audit").execute_in_process(
            partition_key=combo.partition, instance=instance, run_config=combo.run_config(args.queries)
        )
        wall = time.perf_counter() - began
        metadata = {k: v.value for k, v in outcome.asset_materializations_for_node("judge_audit")[0].metadata.items()}
        cold = wall
        for stage, key in combo.stage_keys().items():
            made = metadata.get(f"{stage}_generate_seconds", 0.0)
            if metadata.get(f"{stage}_calls", 0):
                stage_seconds.setdefault(repr(key), made)
            cold += stage_seconds.get(repr(key), 0.0) - made  # calls answered by the cache cost what they cost once
        # A rerun from the cache keeps the cold cost measured when its calls were made.
        cold = max(cold, results.get(combo.partition, {}).get("cold_seconds", 0.0))
        results[combo.partition] = {
            "combination": combo.__dict__,
            "wall_seconds": round(wall, 1),
            "cold_seconds": round(cold, 1),
            **{k: v for k, v in metadata.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(
            f"{combo.partition}: R+F F1 {metadata.get('R+F_f1')}, kappa {metadata.get('R+F_kappa')}, "
            f"AP {metadata.get('R+F_average_precision')}, {wall:.0f} s ({cold:.0f} s cold)",
            flush=True,
        )
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "| truth | judge | stage 1 | ranking | instruction | R+F precision | R+F recall | R+F F1 | R+F "
        "kappa | AP of P(answer) | P@R0.5 | cold wall |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.values():
        c = row["combination"]

        def cell(name: str, row: dict = row) -> str:
            value = row.get(f"R+F_{name}")
            return "" if value is None else f"{value:.3f}"

        lines.append(
            f"| {c['truth']} | {c['judge']} | {c['mode'] or '-'} | {c['ranking'] or '-'} | "
            f"{'yes' if c['instruction'] else 'no'} | "
            f"{cell('precision')} | {cell('recall')} | {cell('f1')} | {cell('kappa')} | {cell('average_precision')} | "
            f"{cell('precision_at_recall_0.5')} | {row['cold_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
