"""A backend for any OpenAI-compatible chat server: `vllm serve`, llama.cpp's server (`arhn
llm-server`), Ollama.

The official `openai` client does the HTTP work: timeouts, and retries with exponential backoff on
connection errors, 408/409/429 and 5xx (honouring Retry-After). What it does not do is run many
requests at once within a limit, so `generate_concurrently` does; when a request fails for good,
the batch stops sending and reports the completions that did finish.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from arhn_assets.core.llm.base import (
    Completion,
    GenerationRequest,
    PartialBatchError,
    Progress,
    first_token_logprobs,
    generate_concurrently,
)

# How each server family accepts a format constraint on the completion.
GuidedDecoding = Literal["none", "vllm", "llama_cpp"]


class ServerError(RuntimeError):
    """The server could not be reached, refused the request, or does not serve the model."""


class ServerBatchError(ServerError, PartialBatchError):
    """A request of a batch failed for good; `completed` holds the requests that finished first."""


@dataclass
class OpenAICompatibleBackend:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str  # the name the server serves the model under
    # Identity for the call cache. The API reports no weights hash, so name the revision you
    # serve (e.g. "Qwen/Qwen3-8B@<commit>") to keep cached calls of different weights apart.
    model_revision: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the env var holding the key; servers without auth accept any
    concurrency: int = 8
    timeout_seconds: float = 120.0
    max_retries: int = 4
    guided_decoding: GuidedDecoding = "none"
    _client: object | None = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        return f"{self.model}@{self.model_revision}" if self.model_revision else self.model

    def _connect(self):
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.base_url,
                api_key=os.environ.get(self.api_key_env) or "no-key",
                timeout=self.timeout_seconds,
                max_retries=self.max_retries,
            )
            self._check_model()
        return self._client

    def _check_model(self) -> None:
        import openai

        try:
            served = [m.id for m in self._client.models.list()]
        except openai.APIStatusError as error:
            raise ServerError(
                f"{self.base_url}: listing models failed with HTTP {error.status_code}: {error.message}"
            ) from error
        except openai.APIConnectionError as error:
            raise ServerError(
                f"{self.base_url}: no OpenAI-compatible server answered after {self.max_retries} retries "
                f"({error.__cause__ or error})"
            ) from error
        if self.model not in served:
            raise ServerError(f"{self.base_url} does not serve model {self.model!r}; it serves {served}")

    def _extra_body(self, request: GenerationRequest) -> dict:
        if request.constraint is None or self.guided_decoding == "none":
            return {}
        if self.guided_decoding == "vllm":
            return {"structured_outputs": {"regex": request.constraint.regex()}}
        return {"grammar": request.constraint.gbnf()}

    def _one(self, request: GenerationRequest) -> Completion:
        import openai

        client = self._connect()
        began = time.perf_counter()
        try:
            response = client.chat.completions.create(
                model=self.model,
                messages=request.as_chat(),
                max_tokens=request.max_new_tokens,
                temperature=0.0,
                extra_body=self._extra_body(request) or None,
                **({"logprobs": True, "top_logprobs": request.top_logprobs} if request.top_logprobs else {}),
            )
        except openai.APIStatusError as error:
            raise ServerError(
                f"{self.base_url}: HTTP {error.status_code} for model {self.model!r}: {error.message}"
            ) from error
        except openai.APITimeoutError as error:  # before its base class, APIConnectionError
            raise ServerError(
                f"{self.base_url}: no answer within {self.timeout_seconds} s, after {self.max_retries} retries"
            ) from error
        except openai.APIConnectionError as error:
            raise ServerError(
                f"{self.base_url}: request failed after {self.max_retries} retries ({error.__cause__ or error})"
            ) from error
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_seconds=time.perf_counter() - began,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            first_token_logprobs=first_token_logprobs(choice.model_dump()),
        )

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[Completion]:
        self._connect()
        return generate_concurrently(requests, self._one, self.concurrency, ServerBatchError, ServerError, progress)
