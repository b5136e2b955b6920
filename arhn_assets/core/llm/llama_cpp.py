"""The embedded backend: llama.cpp's own server code run in process through `xllamacpp`.

xllamacpp ships llama.cpp prebuilt (no compile) with its OpenAI-compatible server. In process,
`Server.handle_chat_completions` takes the same JSON as the HTTP route and releases the GIL, so
requests sent from `parallel` threads are decoded together in llama.cpp's slots (continuous
batching). Grammars (GBNF) constrain rankings and sentence choices; `top_logprobs` returns the
first token's alternatives. The same server can listen on a port for the `openai` backend and
for other processes (`arhn llm-server`).

Chosen by measurement on 2 cores (see README): prefill is compute-bound, so slots help decoding
only; two threads were 1.8x faster than one on idle cores (one is faster when other work holds a
core), hence `threads` is a setting whose default is every core this process may run on.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arhn_assets.core.cores import usable_cores
from arhn_assets.core.llm.base import (
    Completion,
    GenerationRequest,
    PartialBatchError,
    Progress,
    first_token_logprobs,
    generate_concurrently,
)
from arhn_assets.core.llm.models import resolve_gguf

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
QUIET = -1  # llama.cpp's log threshold: errors only, no per-request timing lines


class LlamaCppError(RuntimeError):
    """llama.cpp refused a request (e.g. a prompt longer than a slot's context)."""


class LlamaCppBatchError(LlamaCppError, PartialBatchError):
    """A request of a batch failed; `completed` holds the requests that finished first."""


@dataclass(frozen=True)
class ServerSettings:
    model_path: Path
    threads: int | None = None  # None: every core this process may run on
    context_size: int = 8192  # tokens per slot
    parallel: int = 1  # slots decoded together
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (the in-process server listens too; nothing depends on it)
    api_key: str | None = None
    alias: str | None = None  # the model name the HTTP API answers to


def start_server(settings: ServerSettings):
    """A running llama.cpp server. It installs SIGINT/SIGTERM handlers of its own; Python's are put
    back (when called from the main thread) so Ctrl-C and Dagster's run termination still work."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(settings.model_path)
    threads = settings.threads or usable_cores()
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_parallel = settings.parallel
    params.n_ctx = settings.context_size * settings.parallel
    params.hostnames = [settings.host]
    params.port = settings.port
    params.ui = False
    params.verbosity = QUIET
    # Reusing a cached prompt prefix evaluates the prompt in other chunks, which rounds differently:
    # answers would depend on the request before. Off, one slot answers deterministically.
    params.cache_prompt = False
    if settings.api_key:
        params.api_keys = [settings.api_key]
    if settings.alias:
        params.model_alias = {settings.alias}
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as error:
        raise LlamaCppError(
            f"llama.cpp could not start on {settings.model_path} ({settings.context_size} tokens x "
            f"{settings.parallel} slots): {error}"
        ) from error
    for number, handler in handlers.items():
        signal.signal(number, handler)
    return server


def chat_request(request: GenerationRequest) -> dict:
    """The OpenAI chat-completions body of `request`, greedy, in llama.cpp's dialect."""
    body: dict = {
        "messages": request.as_chat(),
        "max_tokens": request.max_new_tokens,
        "temperature": 0.0,
        "seed": 0,
        # Reasoning models (Qwen3) think unless told not to; templates without the switch ignore it.
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if request.constraint is not None:
        body["grammar"] = request.constraint.gbnf()
    if request.top_logprobs:
        body |= {"logprobs": True, "top_logprobs": request.top_logprobs}
    return body


@dataclass
class LlamaCppBackend:
    """`model`: a preset name ('' = qwen2.5-coder-1.5b) or a .gguf file (see core.llm.models)."""

    model: str = ""
    models_cache: Path = Path("data/cache/models")
    threads: int | None = None
    context_size: int = 8192
    parallel: int = 1
    _server: object | None = field(default=None, repr=False)
    _identity: str | None = field(default=None, repr=False)
    _path: Path | None = field(default=None, repr=False)

    def _resolve(self) -> None:
        if self._path is None:
            resolved = resolve_gguf(self.model, self.models_cache, DEFAULT_MODEL)
            self._path, self._identity = resolved.path, f"llama.cpp:{resolved.identity}"

    @property
    def identity(self) -> str:
        self._resolve()
        return self._identity  # type: ignore[return-value]

    def _load(self):
        if self._server is None:
            self._resolve()
            settings = ServerSettings(self._path, self.threads, self.context_size, self.parallel)  # type: ignore[arg-type]
            self._server = start_server(settings)
        return self._server

    def _one(self, request: GenerationRequest) -> Completion:
        began = time.perf_counter()
        response = self._load().handle_chat_completions(chat_request(request))
        if "choices" not in response:
            error = response.get("error", response)
            raise LlamaCppError(f"llama.cpp ({self.identity}) refused a request: {error.get('message', error)}")
        choice, usage = response["choices"][0], response.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_seconds=time.perf_counter() - began,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            first_token_logprobs=first_token_logprobs(choice),
        )

    def generate(self, requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[Completion]:
        self._load()
        return generate_concurrently(requests, self._one, self.parallel, LlamaCppBatchError, LlamaCppError, progress)

    def close(self) -> None:
        self._server = None  # the server's destructor stops its loop and frees the model
