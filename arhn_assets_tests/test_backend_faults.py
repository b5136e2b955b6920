"""The OpenAI-compatible backend under injected faults, over real HTTP on 127.0.0.1.

A fault-injecting proxy stands between the backend and a real llama.cpp server serving SmolLM2
(`arhn llm-server`, the llm_server fixture). It answers each incoming chat completion request
by the next action of a script, and forwards everything else (the model listing):

- "pass": forward upstream and return its answer;
- "429": refuse with HTTP 429 and a short Retry-After, as a rate-limited server does;
- "500": fail with HTTP 500, as a crashing or overloaded server does;
- "hold": keep the connection silent until the client times out and hangs up;
- "die": drop the connection unanswered and stop listening, so that the client's retries are
  refused, as when the server process dies mid-batch. A new proxy on the same port is the
  server coming back.

Past the end of its script the proxy passes every request. It counts the chat completion
requests it received and those it forwarded upstream, so tests assert exact call counts. No
code of ours is mocked: the `openai` client's own retries and backoff meet these faults.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import httpx
import pytest

from arhn_assets.core.llm.base import GenerationRequest
from arhn_assets.core.llm.cache import CallCache, CallStats, cached_generate
from arhn_assets.core.llm.openai_compatible import OpenAICompatibleBackend, ServerError
from arhn_assets_tests.helpers.llm_server import API_KEY, MODEL

pytestmark = pytest.mark.slow  # a real llama.cpp server behind a fault-injecting proxy

Fault = Literal["pass", "429", "500", "hold", "die"]
RETRY_AFTER_SECONDS = 0.3
# The smallest pause the openai client makes before a retry a server gave no Retry-After for:
# 0.5 s of exponential backoff less at most 25 % jitter.
MIN_BACKOFF_SECONDS = 0.375
HOLD_CEILING_SECONDS = 60.0  # a held connection is dropped by then even if the client waits on


class FaultProxy(ThreadingHTTPServer):
    block_on_close = False  # "die" closes the server from a handler thread, which cannot join itself

    def __init__(self, upstream: str, script: Sequence[Fault], port: int = 0):
        super().__init__(("127.0.0.1", port), FaultHandler)
        self.upstream = httpx.Client(base_url=upstream.removesuffix("/v1"), timeout=120)
        self.script = list(script)
        self.received = 0  # chat completion requests, retries included
        self.forwarded = 0  # chat completion requests the upstream server answered
        self.arrivals: list[float] = []  # time.monotonic() of each received request
        self.retry_counts: list[str] = []  # the client's x-stainless-retry-count of each
        self._lock = threading.Lock()
        self._serving = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._stopped = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> FaultProxy:
        self._serving.start()
        return self

    def next_action(self, retry_count: str) -> Fault:
        with self._lock:
            self.received += 1
            self.arrivals.append(time.monotonic())
            self.retry_counts.append(retry_count)
            action = self.script[self.received - 1] if self.received <= len(self.script) else "pass"
            if action == "pass":
                self.forwarded += 1
            return action

    def die(self) -> None:
        """Stop listening; requests already being forwarded still get their answers."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.shutdown()
        self.server_close()

    def stop(self) -> None:
        self.die()
        self.upstream.close()


class FaultHandler(BaseHTTPRequestHandler):
    # HTTP/1.0, the default, closes the connection after each answer: no kept-alive connection
    # outlives "die", so every retry after it must connect anew and is refused.
    server: FaultProxy

    def do_GET(self) -> None:
        self._forward(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = self.server.next_action(self.headers.get("x-stainless-retry-count", ""))
        if action == "pass":
            self._forward(body)
        elif action in ("429", "500"):
            message = b'{"error": {"message": "injected fault", "type": "server_error"}}'
            self._answer(int(action), message, {"Retry-After": str(RETRY_AFTER_SECONDS)} if action == "429" else {})
        elif action == "hold":  # silent until the client hangs up (recv sees the end of its stream)
            self.connection.settimeout(HOLD_CEILING_SECONDS)
            with contextlib.suppress(TimeoutError):
                self.connection.recv(1)
        else:  # die: returning unanswered drops this connection; stopping the server refuses the next
            self.server.die()

    def _forward(self, body: bytes) -> None:
        headers = {name: self.headers[name] for name in ("Authorization", "Content-Type") if name in self.headers}
        response = self.server.upstream.request(self.command, self.path, content=body, headers=headers)
        self._answer(
            response.status_code,
            response.content,
            {"Content-Type": response.headers.get("Content-Type", "application/json")},
        )

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def proxies() -> Iterator[list[FaultProxy]]:
    """Proxies a test starts in front of the server; all are stopped when it ends."""
    started: list[FaultProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def upstream(llm_server) -> str:
    return llm_server


@pytest.fixture
def start_proxy(upstream, proxies):
    def start(script: Sequence[Fault], port: int = 0) -> FaultProxy:
        proxy = FaultProxy(upstream, script, port).start()
        proxies.append(proxy)
        return proxy

    return start


@pytest.fixture(scope="module", autouse=True)
def api_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARHN_TEST_API_KEY", API_KEY)
        yield


def backend_for(
    base_url: str, max_retries: int, timeout_seconds: float = 120.0, concurrency: int = 1
) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(
        base_url,
        MODEL,
        model_revision="Q4_1",
        api_key_env="ARHN_TEST_API_KEY",
        concurrency=concurrency,
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
    )


def short_request(topic: str) -> GenerationRequest:
    return GenerationRequest((("user", f"Say one word about {topic}."),), 8)


def test_429_then_500_are_retried_with_backoff_until_the_call_succeeds(start_proxy):
    proxy = start_proxy(["429", "500", "pass"])
    [completion] = backend_for(proxy.base_url, max_retries=2).generate([short_request("bread")])
    assert completion.completion_tokens > 0
    assert (proxy.received, proxy.forwarded) == (3, 1)
    assert proxy.retry_counts == ["0", "1", "2"]  # one call, retried by the client, not three calls
    after_429, after_500 = (later - earlier for earlier, later in zip(proxy.arrivals, proxy.arrivals[1:]))
    assert after_429 >= RETRY_AFTER_SECONDS  # the server's Retry-After was honoured
    assert after_500 >= MIN_BACKOFF_SECONDS  # no Retry-After: exponential backoff


def test_a_request_held_past_the_timeout_is_retried(start_proxy):
    proxy = start_proxy(["hold", "pass"])
    began = time.monotonic()
    [completion] = backend_for(proxy.base_url, max_retries=1, timeout_seconds=2.0).generate([short_request("bread")])
    assert completion.completion_tokens > 0 and time.monotonic() - began >= 2.0
    assert (proxy.received, proxy.forwarded) == (2, 1)


def test_a_server_that_never_answers_in_time_is_a_clear_error(start_proxy):
    proxy = start_proxy(["hold", "hold"])
    with pytest.raises(ServerError, match=rf"{re.escape(proxy.base_url)}: no answer within 2.0 s, after 1 retries"):
        backend_for(proxy.base_url, max_retries=1, timeout_seconds=2.0).generate([short_request("bread")])
    assert (proxy.received, proxy.forwarded) == (2, 0)


def test_a_persistent_500_fails_after_exactly_the_configured_retries(start_proxy):
    proxy = start_proxy(["500"] * 10)
    with pytest.raises(ServerError, match=rf"{re.escape(proxy.base_url)}: HTTP 500 for model 'smollm2'"):
        backend_for(proxy.base_url, max_retries=2).generate([short_request("bread")])
    assert (proxy.received, proxy.forwarded) == (3, 0)


def stored_calls(cache: CallCache) -> int:
    with sqlite3.connect(cache.path) as db:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


# With one worker the request after the failed one is never sent; with two it may already run.
@pytest.mark.parametrize(
    ("concurrency", "rest_of_batch"),
    [
        pytest.param(1, "1 failed, 1 not sent", id="one worker"),
        pytest.param(2, "(1 failed, 1|2 failed, 0) not sent", id="two workers"),
    ],
)
def test_a_server_dying_mid_batch_keeps_finished_calls_and_a_rerun_makes_only_the_rest(
    upstream, start_proxy, tmp_path: Path, concurrency, rest_of_batch
):
    requests = [short_request(topic) for topic in ("bread", "yeast", "flour", "salt", "water", "ovens")]
    uninterrupted = cached_generate(
        backend_for(upstream, max_retries=0), CallCache(tmp_path / "direct.sqlite"), "faults", 1, requests
    )

    dying = start_proxy(["pass"] * 4 + ["die"])
    backend = backend_for(dying.base_url, max_retries=1, concurrency=concurrency)
    cache = CallCache(tmp_path / "calls.sqlite")
    interrupted = CallStats()
    with pytest.raises(ServerError) as failure:
        cached_generate(backend, cache, "faults", 1, requests, batch_size=3, stats=interrupted)
    assert re.fullmatch(
        rf"{re.escape(dying.base_url)}: request failed after 1 retries \(.*Connection refused\); "
        rf"1 of 3 requests of the batch finished, {rest_of_batch}",
        str(failure.value),
    )
    assert failure.value.__notes__ == [
        f"{cache.path} keeps the calls of the batch that finished (1); a rerun makes only the rest"
    ]
    assert (dying.received, dying.forwarded) == (5, 4)
    assert interrupted.calls == 4 and stored_calls(cache) == 4

    back = start_proxy([], port=int(dying.server_address[1]))  # the server comes back on the same port
    rerun = CallStats()
    completions = cached_generate(backend, cache, "faults", 1, requests, batch_size=3, stats=rerun)
    assert (back.received, back.forwarded) == (2, 2)
    assert (rerun.cache_hits, rerun.calls) == (4, 2) and stored_calls(cache) == 6
    assert [c.text for c in completions] == [c.text for c in uninterrupted]
