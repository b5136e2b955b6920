"""vLLM offline inference on a GPU (optional `gpu` extra).

Imported only inside the Pipes worker (`arhn_assets.workers.llm_stage`), so the GPU memory vLLM
claims is released when that process exits at the end of the step. vLLM schedules the whole list
of requests itself (continuous batching), so `generate` hands it everything at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from arhn_assets.core.embeddings import model_fingerprint
from arhn_assets.core.llm.base import Completion, GenerationRequest, Progress, TokenLogprobs


@dataclass
class VLLMBackend:
    model: str  # a local HF folder or a hub name (hub names need a reachable hub or a filled HF cache)
    revision: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = 8192
    dtype: str = "auto"
    # Qwen3 and other reasoning models: no thinking block for a span-copying task.
    enable_thinking: bool = False
    _engine: object | None = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        return model_fingerprint(self.model, self.revision)

    def _load(self):
        if self._engine is None:
            try:
                from vllm import LLM
            except ImportError as error:
                raise ImportError("the vllm backend needs the optional extra: pip install 'arhn[gpu]'") from error
            self._engine = LLM(
                model=self.model,
                revision=self.revision,
                tensor_parallel_size=self.tensor_parallel_size,
                gpu_memory_utilization=self.gpu_memory_utilization,
                max_model_len=self.max_model_len,
                dtype=self.dtype,
            )
        return self._engine

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        engine = self._load()
        params = [
            SamplingParams(
                temperature=0.0,
                max_tokens=r.max_new_tokens,
                logprobs=r.top_logprobs or None,
                structured_outputs=StructuredOutputsParams(regex=r.constraint.regex()) if r.constraint else None,
            )
            for r in requests
        ]
        began = time.perf_counter()
        outputs = engine.chat(
            [r.as_chat() for r in requests],
            params,
            use_tqdm=False,
            chat_template_kwargs={"enable_thinking": self.enable_thinking},
        )
        seconds = time.perf_counter() - began
        if progress is not None:
            progress(len(outputs))  # vLLM schedules the whole list at once; it ends all together
        return [
            Completion(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(out.outputs[0].token_ids),
                latency_seconds=seconds,
                finish_reason="length" if out.outputs[0].finish_reason == "length" else "stop",
                first_token_logprobs=_first_token_logprobs(out.outputs[0].logprobs),
            )
            for out in outputs
        ]


def _first_token_logprobs(logprobs) -> TokenLogprobs | None:
    """vLLM's per-position {token id: Logprob(logprob, rank, decoded_token)} for the first token,
    most likely first (the model's own log-probabilities, before structured-output masking)."""
    if not logprobs:
        return None
    ranked = sorted(logprobs[0].values(), key=lambda entry: entry.rank or 0)
    return tuple((entry.decoded_token or "", float(entry.logprob)) for entry in ranked)
