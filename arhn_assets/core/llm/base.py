"""The one protocol every LLM backend implements, and the records of a call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from arhn_assets.core.llm.constraints import OutputConstraint

# Called with the number of requests that just finished (a progress bar's update).
Progress = Callable[[int], None]
# (token text, natural-log probability) of the most likely first tokens, most likely first.
TokenLogprobs = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content), as prompts.Prompt renders them
    max_new_tokens: int
    # Restrict the completion to a language (a complete ranking, sentence numbers) where the
    # backend can: llama.cpp's GBNF grammars, vLLM's structured outputs. The parsers still check.
    constraint: OutputConstraint | None = None
    # Return this many alternatives of the first generated token with their log-probabilities
    # (before any constraint), e.g. to read how likely the model was to answer NO_ANSWER.
    top_logprobs: int = 0

    def as_chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float  # wall time of the batch the request ran in, shared by its requests
    finish_reason: str  # stop | length
    cached: bool = False
    # The first token's alternatives when the request asked for them and the backend gives them.
    first_token_logprobs: TokenLogprobs | None = None
    # Why the backend failed this request, for backends that report failures row by row (the Ray
    # processors): the stage records the row with status `error`, and the call cache never stores
    # it, so the next run asks again.
    error: str | None = None


def first_token_logprobs(choice: dict) -> TokenLogprobs | None:
    """The first generated token's alternatives from an OpenAI-style choice, if it carries them."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None
    return tuple((entry["token"], float(entry["logprob"])) for entry in content[0].get("top_logprobs") or [])


class PartialBatchError(RuntimeError):
    """A batch failed after some of its requests finished. `completed` maps their indices in the
    batch to their completions, so the caller can keep them rather than pay for them again."""

    def __init__(self, message: str, completed: dict[int, Completion]):
        super().__init__(message)
        self.completed = completed


class LLMBackend(Protocol):
    @property
    def identity(self) -> str:
        """Runtime, model name plus revision or file hash: part of every cache key."""

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[Completion]:
        """Greedy completions, one per request, in order, calling `progress(n)` as n more finish.
        A backend whose requests can fail one by one raises PartialBatchError, carrying those that
        finished."""


def generate_concurrently(
    requests: Sequence[GenerationRequest],
    one: Callable[[GenerationRequest], Completion],
    concurrency: int,
    batch_error: type[PartialBatchError],
    expected: type[Exception],
    progress: Progress | None = None,
) -> list[Completion]:
    """`one` over `requests` from `concurrency` threads, completions in request order.

    When a request fails, the queued ones are not sent (a server that refused once after its
    retries would only repeat the wait), the running ones finish, and `batch_error` is raised
    with the completions that did finish. An error that is not `expected` (a bug) is named by
    its type."""
    failed = threading.Event()

    def send(request: GenerationRequest) -> Completion | None:
        if failed.is_set():
            return None  # not sent
        try:
            completion = one(request)
        except Exception:
            failed.set()
            raise
        if progress is not None:
            progress(1)
        return completion

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(send, request) for request in requests]
    failures = [error for f in futures if (error := f.exception()) is not None]
    completed = {i: c for i, f in enumerate(futures) if f.exception() is None and (c := f.result()) is not None}
    if not failures:
        return [completed[i] for i in range(len(requests))]
    first = failures[0]
    cause = str(first) if isinstance(first, expected) else repr(first)
    not_sent = len(requests) - len(completed) - len(failures)
    raise batch_error(
        f"{cause}; {len(completed)} of {len(requests)} requests of the batch finished, {len(failures)} "
        f"failed, {not_sent} not sent",
        completed,
    ) from first
