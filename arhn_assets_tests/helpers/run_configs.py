"""Run config shared by the tests that send data through the embedded LLM."""

from __future__ import annotations

from pathlib import Path

import yaml

MAIN_CPU = Path(__file__).resolve().parents[2] / "configs" / "main-cpu.yaml"

# SmolLM2-135M is fast enough to test the plumbing on 2 cores and too weak for the quality bounds
# a judge must meet (it ranks near input order, and in a window of 20 it repeats ids, which the
# grammar cannot forbid: it fixes the format, not uniqueness), so these tests lift those bounds.
SMOLLM2_BOUNDS = {
    "quality_bounds": {
        "config": {
            "min_grounded_rate": 0.0,
            "max_relabel_rate": 1.0,
            "max_filter_rate": 1.0,
            "max_invalid_ranking_rate": 1.0,
        }
    }
}


def sample(size: int) -> dict:
    """The `query_sample` resource of a run config using the first `size` queries."""
    return {"query_sample": {"config": {"size": size}}}


def smollm2_resources(queries: int | None = None, **language_model) -> dict:
    """The `resources` of a run config judging with the SmolLM2 preset (and `language_model`
    options), on the first `queries` queries when given."""
    resources = {"language_model": {"config": {"model": "smollm2-135m", **language_model}}, **SMOLLM2_BOUNDS}
    return resources | (sample(queries) if queries else {})


def make_run_ranking() -> dict:
    """`make run`'s ranking op config (configs/main-cpu.yaml): candidates ranked by stage 1's
    answer probability, no listwise call. For tests whose subject is not the listwise stage: one
    SmolLM2 window of 20 passages takes ~17 s of prefill on 2 cores."""
    ops = yaml.safe_load(MAIN_CPU.read_text())["ops"]
    return {"answerability_rankings": ops["answerability_rankings"]}
