"""The processors `RayDataBackend` runs its requests through: each turns a Ray Dataset of request
rows (`ray_rows.request_row`) into result rows (`ray_rows.RESULT_SCHEMA`), its workers writing a
shard as each batch finishes.

- `EmbeddedProcessor`, on CPU: Ray actors each holding the project's llama.cpp (`LlamaCppBackend`,
  one slot, `threads` threads), through `map_batches`. Used because `ray.data.llm` cannot run a
  model without vLLM (or SGLang), which need GPUs: on CPU-only machines its only processors are
  HTTP clients. A request that fails is caught on its own and becomes a failed row.
- `HttpProcessor`, against a server: `ray.data.llm`'s `HttpRequestProcessorConfig` pointed at any
  OpenAI-compatible endpoint (`vllm serve`, `arhn llm-server`, Ollama), sending what
  `OpenAICompatibleBackend` sends (the grammar or regex, logprobs) and parsing the JSON back. An
  error the server answers for one request (e.g. a prompt longer than the context) is a failed row.
- `ray_vllm.VLLMProcessor`, on GPUs: `ray.data.llm`'s `vLLMEngineProcessorConfig`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from arhn_assets.core.llm.base import Completion, first_token_logprobs
from arhn_assets.core.llm.ray_rows import (
    failed_row,
    plain,
    read_shards,
    request_from_row,
    result_row,
    result_table,
    write_shard,
    write_shard_batch,
)


class LlamaCppReplica:
    """A Ray actor holding llama.cpp: answers a batch of request rows one by one (one slot decodes
    deterministically), catching each request's failure, and writes the batch's shard."""

    def __init__(self, settings: dict, identity: str, folder: str):
        from arhn_assets.core.llm.llama_cpp import LlamaCppBackend

        self.backend = LlamaCppBackend(**settings | {"models_cache": Path(settings["models_cache"]), "parallel": 1})
        if self.backend.identity != identity:
            raise RuntimeError(
                f"this Ray worker ({os.uname().nodename}) resolves {settings['model']!r} to {self.backend.identity}, "
                f"the driver to {identity}: give every node the same model file"
            )
        self.backend.generate([])  # loads the model now: a worker that cannot fails at start
        self.folder = Path(folder)

    def __call__(self, batch):
        requests = batch.to_pylist()
        # A batch Ray retries after its worker wrote the shard and died: its calls were made.
        written = read_shards(self.folder, {row["key"] for row in requests})
        rows = [result_row(r["key"], written[r["key"]]) if r["key"] in written else self._answer(r) for r in requests]
        write_shard(self.folder, [row for row in rows if row["key"] not in written])
        return result_table(rows)

    def _answer(self, row: dict) -> dict:
        try:
            return result_row(row["key"], self.backend.generate([request_from_row(row)])[0])
        except Exception as error:  # one request's failure is its row's, not the batch's
            return failed_row(row["key"], f"llama.cpp ({self.backend.identity}): {error}")


class CpuReplicas:
    """What the CPU processors' replicas reserve of the cluster (their `replicas` and `cpus_per_replica`)."""

    replicas: int
    cpus_per_replica: float

    @property
    def cpus_reserved(self) -> float:
        return self.replicas * self.cpus_per_replica

    @property
    def gpus_reserved(self) -> float:
        return 0.0


@dataclass
class EmbeddedProcessor(CpuReplicas):
    model: str
    models_cache: Path
    replicas: int = 1
    batch_size: int = 16
    cpus_per_replica: float = 1.0
    threads: int | None = None  # llama.cpp threads per replica; None: the replica's CPUs
    context_size: int = 8192
    _identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            from arhn_assets.core.llm.llama_cpp import LlamaCppBackend

            self._identity = LlamaCppBackend(self.model, self.models_cache).identity
        return self._identity

    def describe(self) -> str:
        return f"{self.replicas} llama.cpp actor(s) of {self.cpus_per_replica:g} CPU, {self.identity}"

    def check(self) -> None:
        self.identity  # noqa: B018 (resolves the model file in the driver: a missing one fails before any work)

    def apply(self, dataset, folder: str):
        from ray.data import ActorPoolStrategy

        settings = {
            "model": self.model,
            "models_cache": str(self.models_cache),
            "threads": self.threads or max(1, int(self.cpus_per_replica)),
            "context_size": self.context_size,
        }
        return dataset.map_batches(
            LlamaCppReplica,
            fn_constructor_kwargs={"settings": settings, "identity": self.identity, "folder": folder},
            batch_size=self.batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=self.replicas),
            num_cpus=self.cpus_per_replica,
        )


def http_payload(row: dict, model: str, guided_decoding: str) -> dict:
    """The chat-completions body `OpenAICompatibleBackend` would send for this request row."""
    request = request_from_row(row)
    body: dict = {
        "model": model,
        "messages": request.as_chat(),
        "max_tokens": request.max_new_tokens,
        "temperature": 0.0,
    }
    if request.constraint is not None and guided_decoding == "vllm":
        body["structured_outputs"] = {"regex": request.constraint.regex()}
    elif request.constraint is not None and guided_decoding == "llama_cpp":
        body["grammar"] = request.constraint.gbnf()
    if request.top_logprobs:
        body |= {"logprobs": True, "top_logprobs": request.top_logprobs}
    return {"payload": body}


def http_result(row: dict, url: str, latency: float = 0.0) -> dict:
    """A result row from the server's JSON answer (`http_response`): the completion, or the error
    the server gave for this request."""
    response = plain(row.get("http_response")) or {}
    choices = response.get("choices") or []
    if not choices:
        error = response.get("error") or response
        message = error.get("message", error) if isinstance(error, dict) else error
        return failed_row(row["key"], f"{url}: {message}")
    choice, usage = choices[0], response.get("usage") or {}
    completion = Completion(
        text=(choice.get("message") or {}).get("content") or "",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_seconds=latency,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        first_token_logprobs=first_token_logprobs(choice),
    )
    return result_row(row["key"], completion)


def _session(timeout_seconds: float):
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds))


@dataclass
class HttpProcessor(CpuReplicas):
    base_url: str
    model: str
    model_revision: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    guided_decoding: str = "none"
    timeout_seconds: float = 120.0
    max_retries: int = 4
    replicas: int = 1
    batch_size: int = 16
    cpus_per_replica: float = 1.0

    def _server(self):
        from arhn_assets.core.llm.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            self.base_url, self.model, self.model_revision, self.api_key_env, max_retries=self.max_retries
        )

    @property
    def identity(self) -> str:
        return self._server().identity  # the in-process openai backend's: both share the call cache

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def describe(self) -> str:
        return f"{self.replicas} HTTP request actor(s) to {self.url}, model {self.model!r}"

    def check(self) -> None:
        self._server().generate([])  # the server answers and serves the model, or ServerError says what

    def config(self):
        from ray.data.llm import HttpRequestProcessorConfig

        return HttpRequestProcessorConfig(
            url=self.url,
            headers={"Authorization": f"Bearer {os.environ.get(self.api_key_env) or 'no-key'}"},
            max_retries=self.max_retries,
            batch_size=self.batch_size,
            concurrency=self.replicas,
            session_factory=functools.partial(_session, self.timeout_seconds),
            http_request_stage={"num_cpus": self.cpus_per_replica},
        )

    def apply(self, dataset, folder: str):
        from ray.data.llm import build_processor

        processor = build_processor(
            self.config(),
            preprocess=functools.partial(http_payload, model=self.model, guided_decoding=self.guided_decoding),
            postprocess=functools.partial(http_result, url=self.url),
        )
        return processor(dataset).map_batches(
            write_shard_batch, fn_kwargs={"folder": folder}, batch_size=self.batch_size, batch_format="pyarrow"
        )
