"""`language_model.execution: ray`: the LLM stages as Ray Data jobs on a real local Ray cluster (2 CPUs),
no mocks. The Ray runs give the in-process runs' rows (llama.cpp actors on CPU, and HTTP requests to
a real llama.cpp server), a worker killed midway repeats no call whose result was written, a Ray
address with no cluster fails before any work, and the vLLM processor (which needs GPUs, so it is
not run here) is built with its replicas, tensor parallelism, structured outputs and no thinking."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from arhn_assets.core.llm.backends import BackendSpec, build_backend
from arhn_assets.core.llm.base import Completion, GenerationRequest
from arhn_assets.core.llm.cache import CallCache, CallStats, cached_generate, call_key
from arhn_assets.core.llm.constraints import ranking, sentences
from arhn_assets.core.llm.llama_cpp import LlamaCppBackend
from arhn_assets.core.llm.ray_data import RayDataBackend, RayJobError, build_ray_backend, build_ray_processor
from arhn_assets.core.llm.ray_processors import LlamaCppReplica
from arhn_assets.core.llm.ray_rows import (
    read_shards,
    request_key,
    request_row,
    result_row,
    result_table,
    write_shard,
    write_shard_batch,
)
from arhn_assets.core.llm.ray_vllm import THINKING_OFF, engine_start_message, vllm_preprocess, vllm_result
from arhn_assets.core.paths import ArhnPaths
from arhn_assets.core.rankings import RankingConfig
from arhn_assets.core.snippets import SnippetConfig
from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.rankings import answerability_rankings
from arhn_assets.defs.resources import RAY_WHOLE_PASS, ArhnStorage, LanguageModel, RayConnection, ray_resource
from arhn_assets.defs.snippets import answer_snippets
from arhn_assets.workers.llm_stage import run_stage
from arhn_assets_tests.helpers.llm_server import API_KEY, MODEL, free_port
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets, toy_candidates

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.all_cores]  # Ray clusters, llama.cpp actors and a llama.cpp server on CPU

CANDIDATES = toy_candidates(2, 3)  # 6 snippets; per query 3 candidates: two ranking windows, two passes
RANKING = RankingConfig(window_size=2, step=1)
SMOLLM2 = {"model": "smollm2-135m", "threads": 1}  # one llama.cpp thread, as each Ray actor has


def frames(candidates: pl.DataFrame = CANDIDATES, passages: pl.DataFrame | None = None) -> dict:
    return {
        "candidates": candidates,
        "triplets": make_triplets(),
        "passages": make_passages() if passages is None else passages,
    }


@pytest.fixture(scope="module")
def in_process(models_cache, tmp_path_factory) -> dict[str, pl.DataFrame]:
    """The rows the Ray runs must give: both stages run in process with llama.cpp."""
    backend = LlamaCppBackend("smollm2-135m", models_cache, threads=1)
    cache = CallCache(tmp_path_factory.mktemp("in_process") / "calls.sqlite")
    snippets, _ = run_stage("answer_snippets", frames(), asdict(SnippetConfig()), backend, cache, 8)
    rankings, _ = run_stage(
        "answerability_rankings", frames() | {"snippets": snippets}, asdict(RANKING), backend, cache, 8
    )
    return {"answer_snippets": snippets, "answerability_rankings": rankings}


def toy_input(name: str, frame: pl.DataFrame) -> dg.AssetsDefinition:
    @dg.asset(name=name, partitions_def=dataset_partitions)
    def _asset() -> pl.DataFrame:
        return frame

    return _asset


def test_both_stages_run_through_ray_from_dagster_and_equal_the_in_process_rows(in_process, tmp_path):
    """The assets, unchanged, with `execution: ray`: the `ray` resource starts a local Ray (2 CPUs)
    for the run and stops it after; each stage pass is one Ray Data job of llama.cpp actors, the
    sliding-window passes in order; Ray's logs and the calls' progress are in the run's log."""
    assert not ray.is_initialized()
    inputs = [
        toy_input("mined_negatives", CANDIDATES),
        toy_input("raw_triplets", make_triplets()),
        toy_input("raw_passages", make_passages()),
    ]
    language_model = LanguageModel(execution="ray", ray_batch_size=2, ray_cluster=RayConnection(num_cpus=2), **SMOLLM2)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["toy"])
        result = dg.materialize(
            [*inputs, answer_snippets, answerability_rankings],
            partition_key="toy",
            instance=instance,
            resources={"storage": ArhnStorage(home=str(tmp_path / "home")), "language_model": language_model},
            run_config={"ops": {"answerability_rankings": {"config": asdict(RANKING)}}},
        )
        log = [entry.user_message for entry in instance.all_logs(result.run_id)]
    for stage in ("answer_snippets", "answerability_rankings"):
        assert_frame_equal(result.output_for_node(stage), in_process[stage])
    jobs = [line for line in log if line.startswith("Ray Data job: ")]
    assert [line.split(" requests")[0] for line in jobs] == ["Ray Data job: 6", "Ray Data job: 2", "Ray Data job: 2"]
    assert any(line.startswith("Ray: connected to local Ray (2 CPUs") for line in log)
    assert any(line.startswith("ray.data: Execution plan of Dataset") for line in log)
    assert any(line.startswith("answer_sentence calls: 6/6 (100%)") for line in log)
    assert any(line == "Ray: stopped local Ray" for line in log)
    assert not ray.is_initialized()
    shards = pl.read_parquet(tmp_path / "home" / "cache" / "llm_ray" / "*" / "*.parquet")
    assert shards.height == shards["key"].n_unique() == 10  # every call written once, by a worker


def test_no_ray_cluster_at_the_address_fails_before_any_work(tmp_path):
    address = f"ray://127.0.0.1:{free_port()}"
    model = LanguageModel(execution="ray", ray_cluster=RayConnection(address=address), **SMOLLM2)
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path)
    began = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at {address}"):
        model.run_stage(dg.build_asset_context(), paths, "answer_snippets", frames(), asdict(SnippetConfig()))
    assert time.monotonic() - began < 10
    assert not (paths.home / "cache").exists() and not ray.is_initialized()


def test_a_step_that_sets_nothing_starts_no_ray():
    """Every mining and LLM step has the `ray` resource. Built from an empty launch config, as a run
    that does not mention it builds it, it must leave Ray alone: dagster-ray's own lifecycle
    default starts a local Ray (or creates a KubeRay cluster) in every such step."""
    with dg.build_resources({"ray": ray_resource()}, resource_config={"ray": {"config": {}}}) as resources:
        lifecycle = resources.ray.lifecycle
        assert (lifecycle.create, lifecycle.wait, lifecycle.connect) == (False, False, False)
        assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_http_processor_against_the_llama_cpp_server_gives_the_openai_backends_rows(
    local_ray, llm_server, tmp_path, monkeypatch
):
    """ray.data.llm's HTTP processor against a real llama.cpp server (GBNF grammar, first-token
    logprobs) gives the in-process openai backend's rows; a request the server refuses (longer than
    its context) is a row with status `error` and the server's reason, cached nowhere."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    spec = BackendSpec(
        backend="openai", base_url=llm_server, model=MODEL, guided_decoding="llama_cpp", ray_batch_size=2
    )
    options = asdict(SnippetConfig(max_words=20_000))
    candidates = toy_candidates(2, 2)
    expected, _ = run_stage(
        "answer_snippets",
        frames(candidates),
        options,
        build_backend(spec, tmp_path),
        CallCache(tmp_path / "a.sqlite"),
        8,
    )
    long = pl.DataFrame({"doc_id": ["long"], "title": [""], "text": [" ".join(["Plants need light to grow."] * 1500)]})
    with_long = pl.concat(
        [candidates, pl.DataFrame([("toy", "q_photo", "long", "mined")], schema=candidates.columns, orient="row")]
    )
    backend = build_ray_backend(spec, tmp_path, tmp_path / "llm_ray")
    cache = CallCache(tmp_path / "b.sqlite")
    frame, stats = run_stage(
        "answer_snippets",
        frames(with_long, pl.concat([make_passages(), long])),
        options,
        backend,
        cache,
        RAY_WHOLE_PASS,
    )
    assert_frame_equal(frame.filter(pl.col("doc_id") != "long"), expected)
    assert frame["answer_probability"].drop_nulls().len() == candidates.height  # first-token logprobs came back
    (failed,) = frame.filter(pl.col("doc_id") == "long").to_dicts()
    assert failed["status"] == "error" and "context" in failed["completion"] and failed["snippet"] is None
    assert stats.calls == 5 and backend.runs[-1].failed == 1
    assert len(read_shards(backend.folder)) == 4  # the failed row was not written, nor cached:
    with sqlite3.connect(tmp_path / "b.sqlite") as db:
        assert db.execute("select count(*) from calls").fetchone()[0] == 4


def test_a_ray_worker_killed_midway_repeats_no_written_call(local_ray, in_process, models_cache, tmp_path):
    """The llama.cpp actor is SIGKILLed once two batches are written: Ray restarts it and retries
    the batch it held; no call whose result was written is made again, and the rerun (a new call
    cache) makes no call at all, reading every result from the shards."""
    backend = build_ray_backend(BackendSpec(ray_batch_size=1, **SMOLLM2), models_cache, tmp_path / "llm_ray")
    killed: list[int] = []

    def kill_after_two_shards() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            shards = sorted(backend.folder.glob("part-*.parquet")) if backend.folder.is_dir() else []
            if len(shards) >= 2:
                killed.append(int(shards[0].name.split("-")[1]))  # part-<worker pid>-<uuid>.parquet
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.1)

    threading.Thread(target=kill_after_two_shards, daemon=True).start()
    options = asdict(SnippetConfig())
    try:
        frame, _ = run_stage(
            "answer_snippets", frames(), options, backend, CallCache(tmp_path / "a.sqlite"), RAY_WHOLE_PASS
        )
    except RayJobError:  # Ray gave up on the job: what was written is kept, and the rerun below sends the rest
        frame = None
    assert killed
    written = pl.read_parquet(backend.folder / "*.parquet")
    assert written.height == written["key"].n_unique()  # no call written twice
    rerun, _ = run_stage(
        "answer_snippets", frames(), options, backend, CallCache(tmp_path / "b.sqlite"), RAY_WHOLE_PASS
    )
    assert (backend.runs[-1].from_shards, backend.runs[-1].answered) == (
        written.height,
        CANDIDATES.height - written.height,
    )
    shards = pl.read_parquet(backend.folder / "*.parquet")
    assert shards.height == shards["key"].n_unique() == CANDIDATES.height  # every call made and written once
    expected = in_process["answer_snippets"]
    if frame is not None:
        assert_frame_equal(frame, expected)
    assert_frame_equal(rerun.drop("cached"), expected.drop("cached"))


def test_a_batch_ray_retries_after_its_shard_was_written_is_not_called_or_written_again(models_cache, tmp_path):
    """The window the kill above can hit: a worker writes its batch's shard and dies before Ray
    hears back, so Ray hands the same batch to a restarted worker. That worker answers it from the
    shard (same latency: no new call) and writes nothing; `write_shard_batch` (after the vLLM and
    HTTP processors) likewise writes no row twice."""
    backend = build_backend(BackendSpec(**SMOLLM2), models_cache)
    requests = [GenerationRequest((("user", text),), 4) for text in ("hello", "name a colour")]
    batch = pa.Table.from_pylist([request_row(request_key(backend.identity, r), r) for r in requests])
    settings = {"model": SMOLLM2["model"], "threads": 1, "models_cache": str(models_cache)}
    replica = LlamaCppReplica(settings, backend.identity, str(tmp_path / "llama"))
    first = replica(batch)
    retried = LlamaCppReplica(settings, backend.identity, str(tmp_path / "llama"))(batch)
    assert retried.equals(first) and first["error"].null_count == 2
    assert len(list((tmp_path / "llama").glob("*.parquet"))) == 1

    for _ in range(2):
        write_shard_batch(first, str(tmp_path / "vllm"))
    assert pl.read_parquet(tmp_path / "vllm" / "*.parquet").height == 2


@dataclass
class FailingEchoProcessor:
    """A processor of the `RayProcessor` protocol whose Ray tasks answer each prompt with "echo",
    writing a shard per row, and fail (in the Ray worker) on a prompt that says "boom"."""

    identity: str = "echo-test"
    replicas: int = 1
    batch_size: int = 1
    cpus_reserved: float = 1.0
    gpus_reserved: float = 0.0

    def describe(self) -> str:
        return "echo tasks"

    def check(self) -> None:
        pass

    def apply(self, dataset, folder: str):
        def answer(batch):
            rows = batch.to_pylist()
            if any("boom" in str(row["messages"]) for row in rows):
                raise ValueError("boom: this batch fails")
            written = [result_row(row["key"], Completion("echo", 1, 1, 0.0, "stop")) for row in rows]
            write_shard(Path(folder), written)
            return result_table(written)

        return dataset.map_batches(answer, batch_size=1, batch_format="pyarrow")


def test_a_failed_ray_job_raises_rays_error_with_the_rows_done_and_keeps_them(local_ray, tmp_path):
    """A Ray Data job that fails: the error is Ray's (the worker's exception) with the rows done; what
    was written is in the call cache, and the rerun sends only the rest."""
    backend = RayDataBackend(FailingEchoProcessor(), tmp_path / "llm_ray")
    cache = CallCache(tmp_path / "calls.sqlite")
    requests = [GenerationRequest((("user", text),), 4) for text in ("a", "b", "c", "boom")]
    with pytest.raises(RayJobError, match="boom: this batch fails") as caught:
        cached_generate(backend, cache, "t", 1, requests, RAY_WHOLE_PASS)
    written = read_shards(backend.folder)
    assert f"failed after {backend.runs[-1].answered} of 4 requests came back ({len(written)} written" in str(
        caught.value
    )
    assert len(caught.value.completed) == len(written) == len(cache.get(cache_keys(backend, requests)))
    stats = CallStats()
    completions = cached_generate(backend, cache, "t", 1, requests[:3], RAY_WHOLE_PASS, stats)
    assert [c.text for c in completions] == ["echo"] * 3
    assert stats.calls == 3 - len(written)  # the rerun sends only what was not written


def cache_keys(backend, requests) -> list[str]:
    return [call_key(backend.identity, "t", 1, r) for r in requests]


def test_vllm_processor_is_built_with_replicas_tensor_parallelism_structured_outputs_and_no_thinking(
    local_ray, tmp_path
):
    """Built against the local cluster (not run: no GPU, no vLLM here)."""
    from arhn_assets.core.llm.ray_vllm_engine import GuardedEngineUDF

    (tmp_path / "model").mkdir()
    spec = BackendSpec(
        backend="vllm",
        model=str(tmp_path / "model"),
        tensor_parallel_size=2,
        gpu_memory_utilization=0.85,
        max_model_len=4096,
        ray_replicas=3,
        ray_batch_size=64,
    )
    processor = build_ray_processor(spec, tmp_path)
    config = processor.config()
    assert config.concurrency == (3, 3) and config.batch_size == 64 and config.should_continue_on_error
    assert config.engine_kwargs == {
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "dtype": "auto",
        "task_type": "generate",
    }
    built = processor.build()
    assert built.list_stage_names() == ["ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"]
    assert built.get_stage_by_name("ChatTemplateStage").fn_constructor_kwargs["chat_template_kwargs"] == THINKING_OFF
    engine = built.get_stage_by_name("vLLMEngineStage")
    assert engine.fn is GuardedEngineUDF
    assert (
        engine.fn_constructor_kwargs["engine_kwargs"]["distributed_executor_backend"] == "ray"
    )  # TP 2: a placement group
    assert engine.map_batches_kwargs["compute"].min_size == engine.map_batches_kwargs["compute"].max_size == 3

    window = GenerationRequest((("user", "rank"),), 40, ranking(3))
    row = vllm_preprocess(request_row("k", window))
    regex = ranking(3).regex()
    assert row["sampling_params"] == {
        "temperature": 0.0,
        "max_tokens": 40,
        "logprobs": None,
        "structured_outputs": {"regex": regex},
    }
    snippet = GenerationRequest((("user", "which sentence?"),), 8, sentences(4), top_logprobs=20)
    assert vllm_preprocess(request_row("k", snippet))["sampling_params"]["logprobs"] == 20


def test_vllm_rows_become_completions_or_errors_and_a_failed_engine_start_is_named():
    """What the vLLM processor's rows turn into (the row shapes of ray.data.llm's vLLM stage), and
    the message of an engine that cannot load its model."""
    first = {
        1: {"logprob": -0.1, "rank": 1, "decoded_token": "2"},
        7: {"logprob": -2.5, "rank": 2, "decoded_token": "NO"},
    }
    ok = {"key": "a", "max_tokens": 8, "generated_text": "2", "num_input_tokens": 50, "num_generated_tokens": 1,
          "logprobs": [first], "time_taken_llm": 0.2, "__inference_error__": ""}  # fmt: skip
    row = vllm_result(ok, "Qwen/Qwen3-8B")
    assert (row["text"], row["prompt_tokens"], row["finish_reason"], row["error"]) == ("2", 50, "stop", None)
    assert row["logprob_tokens"] == ["2", "NO"] and row["logprob_values"] == [-0.1, -2.5]
    failed = vllm_result({"key": "b", "max_tokens": 8, "__inference_error__": "ValueError: prompt too long"}, "m")
    assert failed["error"] == "vLLM (m): ValueError: prompt too long"

    kwargs = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85, "max_model_len": 32768}
    message = engine_start_message(
        "Qwen/Qwen3-32B", kwargs, ValueError("No available memory for the cache blocks"), (2.0, 139.8)
    )
    assert "'Qwen/Qwen3-32B' on 2 GPU(s)" in message and "85% of each GPU's memory (118.8 of 139.8 GiB" in message
    assert "max_model_len=32768" in message and "No available memory for the cache blocks" in message


def test_the_ray_backend_shares_the_in_process_cache_keys(models_cache, tmp_path):
    """Its identity is the inner model's, so a call cached by an in-process run is a hit for a Ray run."""
    backend = build_ray_backend(BackendSpec(**SMOLLM2), models_cache, tmp_path)
    inner = build_backend(BackendSpec(**SMOLLM2), models_cache)
    request = GenerationRequest((("user", "hello"),), 4)
    assert call_key(backend.identity, "t", 1, request) == call_key(inner.identity, "t", 1, request)
