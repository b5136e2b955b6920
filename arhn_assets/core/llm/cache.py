"""A persistent cache of LLM calls, written as each batch completes.

Keyed by model identity, prompt template and version, the prompt's digest and the decoding
parameters, so a killed run resumes without repeating a finished call and a warm re-run makes
no call at all. SQLite in WAL mode: one file, safe against a crash mid-write, readable while a
run writes it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from arhn_assets.core.llm.base import Completion, GenerationRequest, LLMBackend, PartialBatchError
from arhn_assets.core.progress import Log, progress

# Requests sent to a backend at a time; each batch's completions are cached as it returns.
DEFAULT_BATCH_SIZE = 8


def call_key(identity: str, template: str, version: int, request: GenerationRequest) -> str:
    payload = {
        "model": identity,
        "template": template,
        "version": version,
        "messages": request.messages,
        "decoding": {
            "greedy": True,
            "max_new_tokens": request.max_new_tokens,
            "top_logprobs": request.top_logprobs,
            "constraint": asdict(request.constraint) if request.constraint else None,
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class CallStats:
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_seconds: float = 0.0

    @property
    def completion_tokens_per_second(self) -> float:
        return self.completion_tokens / self.generate_seconds if self.generate_seconds else 0.0


class CallCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, completion TEXT NOT NULL, created REAL NOT NULL)"
        )

    def get(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, completion FROM calls WHERE key IN ({marks})", chunk):
                found[key] = _completion(json.loads(value))
        return found

    def put(self, items: Sequence[tuple[str, Completion]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                [(key, json.dumps(asdict(c) | {"cached": False}), time.time()) for key, c in items],
            )

    def close(self) -> None:
        self._db.close()


def _completion(stored: dict) -> Completion:
    """A stored completion (JSON turned the logprob pairs into lists)."""
    logprobs = stored.get("first_token_logprobs")
    if logprobs is not None:
        stored["first_token_logprobs"] = tuple((token, logprob) for token, logprob in logprobs)
    return Completion(**stored | {"cached": True})


def cached_generate(
    backend: LLMBackend,
    cache: CallCache,
    template: str,
    version: int,
    requests: Sequence[GenerationRequest],
    batch_size: int = DEFAULT_BATCH_SIZE,
    stats: CallStats | None = None,
    log: Log | None = None,
) -> list[Completion]:
    """Completions for `requests`, from the cache where possible; misses go to the backend in
    batches of `batch_size`, and each batch is stored as soon as it returns. A batch that fails
    partway still stores the calls that finished before the error is raised, so a rerun makes
    only the rest. Progress of the calls made (done/total, rate, ETA) goes to `log`.

    A completion that carries an `error` (a backend that reports failures row by row) is returned
    for the stage to record, but never stored: the next run asks for it again."""
    stats = stats if stats is not None else CallStats()
    keys = [call_key(backend.identity, template, version, r) for r in requests]
    results = cache.get(keys)
    stats.cache_hits += sum(1 for k in keys if k in results)
    todo = [(k, r) for k, r in dict(zip(keys, requests)).items() if k not in results]
    with progress(f"{template} calls", len(todo), log if todo else None, "calls") as bar:
        for start in range(0, len(todo), batch_size):
            _generate_batch(backend, cache, todo[start : start + batch_size], results, stats, bar.update)
    failed = [results[k].error for k, _ in todo if results[k].error is not None]
    if failed and log is not None:
        log(
            f"{template}: {len(failed)} calls failed and were not cached (the next run retries them); "
            f"first: {failed[0]}"
        )
    return [results[k] for k in keys]


def _generate_batch(
    backend: LLMBackend,
    cache: CallCache,
    batch: list[tuple[str, GenerationRequest]],
    results: dict[str, Completion],
    stats: CallStats,
    update,
) -> None:
    """One batch through the backend, stored as it returns (what finished of it, if it fails)."""
    began = time.perf_counter()
    try:
        completions = backend.generate([r for _, r in batch], update)
    except PartialBatchError as error:
        finished = [(batch[index][0], completion) for index, completion in sorted(error.completed.items())]
        _keep(finished, cache, results, stats)
        error.add_note(
            f"{cache.path} keeps the calls of the batch that finished ({len(finished)}); a rerun makes only the rest"
        )
        raise
    finally:
        stats.generate_seconds += time.perf_counter() - began
    if len(completions) != len(batch):
        raise RuntimeError(f"{backend.identity} answered {len(completions)} of {len(batch)} requests")
    _keep([(k, c) for (k, _), c in zip(batch, completions)], cache, results, stats)


def _keep(
    finished: Sequence[tuple[str, Completion]], cache: CallCache, results: dict[str, Completion], stats: CallStats
) -> None:
    """Store finished calls (not failed ones) and count them as made."""
    cache.put([(key, completion) for key, completion in finished if completion.error is None])
    for key, completion in finished:
        results[key] = completion
        stats.calls += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
