"""The LLM stages on the toy data with SmolLM2-135M: the backend, one stage run on toy
candidates, and the scripts that a test kills midway (helpers/processes.py) and then resumes."""

from __future__ import annotations

import textwrap
from pathlib import Path

from arhn_assets.core.llm.cache import CallCache
from arhn_assets.core.llm.llama_cpp import LlamaCppBackend
from arhn_assets.core.rankings import RankingConfig, rank_candidates
from arhn_assets.core.snippets import SnippetConfig, extract_snippets
from arhn_assets_tests.helpers.run_configs import smollm2_resources
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets, toy_candidates

SNIPPET_STATUSES = {"answer", "no_answer", "ungrounded", "invalid"}


def smollm2(models_cache: Path, parallel: int = 1) -> LlamaCppBackend:
    return LlamaCppBackend("smollm2-135m", models_cache, parallel=parallel)


RESUMABLE_RUN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from arhn_assets.core.llm.cache import CallCache
    from arhn_assets_tests.helpers.llm_stages import run_toy_stage, smollm2
    run_toy_stage(sys.argv[1], smollm2(Path(sys.argv[3])), CallCache(Path(sys.argv[2])))
""")
# Calls each stage makes on toy_candidates(6, 3): a snippet per candidate; two ranking windows
# (of 2, moved by 1) per query, one call per batch so every window is stored as it finishes.
TOY_STAGE_CALLS = {"answer_snippets": 18, "answerability_rankings": 12}


def run_toy_stage(stage: str, backend, cache: CallCache):
    candidates = toy_candidates(6, 3)
    if stage == "answer_snippets":
        return extract_snippets(
            candidates, make_triplets(), make_passages(), backend, cache, SnippetConfig(), batch_size=2
        )
    return rank_candidates(
        candidates,
        make_triplets(),
        make_passages(),
        None,
        backend,
        cache,
        RankingConfig(window_size=2, step=1),
        batch_size=1,
    )


KILLABLE_MATERIALIZATION = textwrap.dedent("""
    import dagster as dg
    from arhn_assets.cli import pipeline_job
    from arhn_assets.definitions import defs
    from arhn_assets_tests.helpers.llm_stages import RESUME_RUN_CONFIG, SNIPPETS_CHAIN
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["kill-sample"])
        job = pipeline_job(defs(), SNIPPETS_CHAIN)
        job.execute_in_process(partition_key="kill-sample", instance=instance, run_config=RESUME_RUN_CONFIG)
""")
SNIPPETS_CHAIN = "group:ingest or group:mining or key:answer_snippets"
# Two snippets per backend call, so every call is stored as its pair finishes.
RESUME_RUN_CONFIG = {"resources": smollm2_resources(batch_size=2)}
