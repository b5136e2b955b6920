"""`VLLMProcessor`: `RayDataBackend` on GPUs, through `ray.data.llm`'s vLLM engine processor.

`replicas` engines (Ray Data actors, `concurrency`) of `tensor_parallel_size` GPUs each. Each row's
sampling params are greedy, ask the first token's alternatives when the request does, and carry
the output constraint as `structured_outputs: {regex: ...}`: Ray's vLLM stage
(ray/llm/_internal/batch/stages/vllm_engine_stage.py, `_prepare_llm_request`) pops that dict from
the sampling params and builds vLLM's `StructuredOutputsParams` from it, the same regex the
in-process vLLM backend uses. Qwen3's thinking is switched off in the chat template stage.
`should_continue_on_error` turns a request vLLM rejects into a failed row. Each engine runs in its
own actor process, so its GPU memory is freed when the job's actors exit; an engine that cannot
start raises `EngineStartError`, which names the model and the GPU memory it was given.

Not run here: this machine has no GPU and no vLLM. The tests build the processor config and the
processor, and check the per-row sampling params and the error message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from arhn_assets.core.llm.base import Completion, GenerationRequest
from arhn_assets.core.llm.ray_rows import failed_row, plain, request_from_row, result_row, write_shard_batch

THINKING_OFF = {"enable_thinking": False}
GIB = 1024**3


class EngineStartError(RuntimeError):
    """A vLLM engine replica could not start (the model does not fit, or cannot be loaded)."""


def engine_start_message(
    model: str, engine_kwargs: dict, error: BaseException, gpu_memory: tuple[float, float] | None = None
) -> str:
    """What an engine that failed to start was asked for: the model, the share of each GPU's memory
    (in GiB when the GPU's size is known, `gpu_memory` = (free, total) GiB) and the context length."""
    share = float(engine_kwargs.get("gpu_memory_utilization", 0.9))
    gpus = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(engine_kwargs.get("pipeline_parallel_size", 1))
    asked = f"gpu_memory_utilization={share:g}: {share:.0%} of each GPU's memory"
    if gpu_memory is not None:
        free, total = gpu_memory
        asked += f" ({share * total:.1f} of {total:.1f} GiB; {free:.1f} GiB were free)"
    return (
        f"vLLM could not start model {model!r} on {gpus} GPU(s) per replica, asking for {asked}, "
        f"max_model_len={engine_kwargs.get('max_model_len')}: {type(error).__name__}: {error}. "
        "Give it more memory (gpu_memory_utilization, tensor_parallel_size, a GPU no other process holds) "
        "or ask for less (max_model_len)."
    )


def gpu_memory() -> tuple[float, float] | None:
    """(free, total) GiB of this process's current GPU, or None without one."""
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
    except Exception:
        return None
    return free / GIB, total / GIB


def vllm_sampling_params(request: GenerationRequest) -> dict:
    """A row's sampling params as Ray's vLLM stage reads them (see the module's docstring)."""
    constraint = request.constraint
    return {
        "temperature": 0.0,
        "max_tokens": request.max_new_tokens,
        "logprobs": request.top_logprobs or None,
        "structured_outputs": {"regex": constraint.regex()} if constraint else None,
    }


def vllm_preprocess(row: dict) -> dict:
    return {"messages": plain(row["messages"]), "sampling_params": vllm_sampling_params(request_from_row(row))}


def vllm_first_token_logprobs(logprobs) -> tuple[tuple[str, float], ...] | None:
    """The first position of the stage's `logprobs` ({token id: {logprob, rank, decoded_token}} per
    generated token), most likely first: the model's own probabilities, before the constraint."""
    logprobs = plain(logprobs)
    if not logprobs or not logprobs[0]:
        return None
    ranked = sorted(logprobs[0].values(), key=lambda entry: entry.get("rank") or 0)
    return tuple((entry.get("decoded_token") or "", float(entry["logprob"])) for entry in ranked)


def vllm_result(row: dict, model: str) -> dict:
    """A result row from the vLLM stage's output row, or from its error row (which bypasses the
    processor's postprocess and carries `__inference_error__`)."""
    if row.get("__inference_error__"):
        return failed_row(row["key"], f"vLLM ({model}): {row['__inference_error__']}")
    tokens = int(row.get("num_generated_tokens") or 0)
    completion = Completion(
        text=row.get("generated_text") or "",
        prompt_tokens=int(row.get("num_input_tokens") or 0),
        completion_tokens=tokens,
        latency_seconds=float(row.get("time_taken_llm") or 0.0),
        finish_reason="length" if tokens >= int(row["max_tokens"]) else "stop",
        first_token_logprobs=vllm_first_token_logprobs(row.get("logprobs")),
    )
    return result_row(row["key"], completion)


@dataclass
class VLLMProcessor:
    model: str  # a hub name or a folder every GPU node can read
    revision: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = 8192
    replicas: int = 1
    batch_size: int = 32

    @property
    def identity(self) -> str:
        from arhn_assets.core.llm.vllm_offline import VLLMBackend

        return VLLMBackend(self.model, self.revision).identity  # the in-process vLLM backend's

    @property
    def cpus_reserved(self) -> float:
        return 0.0

    @property
    def gpus_reserved(self) -> float:
        return float(self.replicas * self.tensor_parallel_size)

    def describe(self) -> str:
        return f"{self.replicas} vLLM engine(s) of {self.tensor_parallel_size} GPU(s), {self.model}"

    def check(self) -> None:
        """vLLM lives on the GPU workers, not necessarily beside the driver: nothing to check here."""

    def engine_kwargs(self) -> dict:
        kwargs: dict = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": "auto",
        }
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        if self.revision:
            kwargs["revision"] = self.revision
        return kwargs

    def config(self):
        from ray.data.llm import vLLMEngineProcessorConfig

        return vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=self.engine_kwargs(),
            concurrency=(self.replicas, self.replicas),  # a fixed pool: every engine starts with the job
            batch_size=self.batch_size,
            should_continue_on_error=True,
            chat_template_stage={"enabled": True, "chat_template_kwargs": THINKING_OFF},
        )

    def build(self):
        """The processor, its engine stage replaced by one whose start failure is an EngineStartError."""
        from ray.data.llm import build_processor

        from arhn_assets.core.llm.ray_vllm_engine import GuardedEngineUDF

        processor = build_processor(self.config(), preprocess=vllm_preprocess)
        processor.get_stage_by_name("vLLMEngineStage").fn = GuardedEngineUDF
        return processor

    def apply(self, dataset, folder: str):
        return (
            self.build()(dataset)
            .map(functools.partial(vllm_result, model=self.model))
            .map_batches(
                write_shard_batch, fn_kwargs={"folder": folder}, batch_size=self.batch_size, batch_format="pyarrow"
            )
        )
