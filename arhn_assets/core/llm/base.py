"""The one protocol every LLM backend implements, and the records of a call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content), as prompts.Prompt renders them
    max_new_tokens: int
    # Constrain the completion to a complete ranking `[a] > [b] > …` of this many ids, where the
    # backend can (embedded: token mask; OpenAI-compatible servers: guided decoding).
    ranking_of: int | None = None

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


class PartialBatchError(RuntimeError):
    """A batch failed after some of its requests finished. `completed` maps their indices in the
    batch to their completions, so the caller can keep them rather than pay for them again."""

    def __init__(self, message: str, completed: dict[int, Completion]):
        super().__init__(message)
        self.completed = completed


class LLMBackend(Protocol):
    @property
    def identity(self) -> str:
        """Model name plus revision or file hash: part of every cache key."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Greedy completions, one per request, in order. A backend whose requests can fail one by
        one raises PartialBatchError, carrying those that finished."""
