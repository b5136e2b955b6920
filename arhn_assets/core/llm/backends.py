"""Which LLM backend a run uses, as plain data: the Dagster resource builds it in process, and the
Pipes worker rebuilds the same backend from its JSON form in another process."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from arhn_assets.core.llm.base import LLMBackend
from arhn_assets.core.llm.cache import DEFAULT_BATCH_SIZE
from arhn_assets.core.llm.models import PRESETS

BackendKind = Literal["embedded", "openai", "vllm"]


@dataclass(frozen=True)
class BackendSpec:
    # embedded: llama.cpp in process (CPU); openai: any OpenAI-compatible server (vllm serve,
    # llama.cpp, Ollama); vllm: offline on a GPU, always in a Pipes subprocess.
    backend: BackendKind = "embedded"
    # embedded: a preset (qwen2.5-coder-1.5b, smollm2-135m; '' = qwen2.5-coder-1.5b) or a .gguf file;
    # openai: the served model name; vllm: an HF folder or hub name (a preset name means its hub name).
    model: str = ""
    model_revision: str = ""
    batch_size: int = DEFAULT_BATCH_SIZE  # requests per backend call: each call's completions are cached as it returns
    # embedded (llama.cpp): threads (None: every core the process may use), tokens of context per
    # slot, and slots decoded together. One slot answers deterministically; several round
    # differently (llama.cpp#6950) and on CPU speed up decoding only.
    threads: int | None = None
    context_size: int = 8192
    parallel: int = 1
    # openai
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_seconds: float = 120.0
    max_retries: int = 4
    guided_decoding: Literal["none", "vllm", "llama_cpp"] = "none"
    # vllm
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = 8192
    # language_model.execution='ray' (core.llm.ray_data): replicas of the model (llama.cpp actors,
    # HTTP request actors, or vLLM engines of tensor_parallel_size GPUs), rows per Ray Data batch
    # (each batch's results are written as a shard when it finishes), and the CPUs each llama.cpp
    # or HTTP replica reserves (llama.cpp's threads when `threads` is null).
    ray_replicas: int = 1
    ray_batch_size: int = 16
    ray_cpus_per_replica: float = 1.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BackendSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LLM backend option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


MODEL_NEEDED = {
    "openai": "the openai backend needs `model`: the name the server serves the model under",
    "vllm": "the vllm backend needs `model`: an HF folder or hub name, e.g. Qwen/Qwen3-8B",
}


def served_model(spec: BackendSpec) -> str:
    """The model the openai or vllm backend asks for (for vllm, a preset's hub name); an error
    saying what to set when `model` is empty. In process and on Ray alike."""
    if not spec.model:
        raise ValueError(MODEL_NEEDED[spec.backend])
    preset = PRESETS.get(spec.model) if spec.backend == "vllm" else None
    return preset.hub_name if preset else spec.model


def build_backend(spec: BackendSpec, models_cache: Path) -> LLMBackend:
    """The backend `spec` names. Heavy imports (torch, openai, vllm) happen on first use."""
    if spec.backend == "embedded":
        from arhn_assets.core.llm.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(
            model=spec.model,
            models_cache=models_cache,
            threads=spec.threads,
            context_size=spec.context_size,
            parallel=spec.parallel,
        )
    if spec.backend == "openai":
        from arhn_assets.core.llm.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            base_url=spec.base_url,
            model=served_model(spec),
            model_revision=spec.model_revision,
            api_key_env=spec.api_key_env,
            concurrency=spec.concurrency,
            timeout_seconds=spec.timeout_seconds,
            max_retries=spec.max_retries,
            guided_decoding=spec.guided_decoding,
        )
    if spec.backend == "vllm":
        from arhn_assets.core.llm.vllm_offline import VLLMBackend

        return VLLMBackend(
            model=served_model(spec),
            revision=spec.model_revision or None,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            max_model_len=spec.max_model_len,
        )
    raise ValueError(f"unknown LLM backend {spec.backend!r}; choose 'embedded', 'openai' or 'vllm'")
