"""The OpenAI-compatible backend against a real server on 127.0.0.1: llama.cpp's own (`arhn
llm-server`, xllamacpp) serving the same SmolLM2 GGUF as the embedded backend. No mocked HTTP:
authentication, model checks, concurrency, retries, log-probabilities and grammar-constrained
rankings all go over the wire."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from arhn_assets.core.llm.backends import BackendSpec, build_backend
from arhn_assets.core.llm.base import GenerationRequest
from arhn_assets.core.llm.cache import CallCache
from arhn_assets.core.llm.constraints import ranking
from arhn_assets.core.llm.openai_compatible import OpenAICompatibleBackend, ServerError
from arhn_assets.core.parsing import parse_ranking
from arhn_assets.core.prompts import ranking_prompt, snippet_prompt
from arhn_assets.core.snippets import SnippetConfig, extract_snippets
from arhn_assets_tests.helpers.llm_server import API_KEY, MODEL, free_port, start_server, stop
from arhn_assets_tests.helpers.llm_stages import SNIPPET_STATUSES
from arhn_assets_tests.helpers.toy_data import make_passages, make_triplets, toy_candidates

pytestmark = pytest.mark.slow  # a real llama.cpp server and LLM calls over HTTP


@pytest.fixture(scope="module")
def server(llm_server) -> str:
    return llm_server


@pytest.fixture
def backend(server, monkeypatch) -> OpenAICompatibleBackend:
    monkeypatch.setenv("ARHN_TEST_API_KEY", API_KEY)
    spec = BackendSpec(
        backend="openai",
        base_url=server,
        model=MODEL,
        model_revision="Q4_1",
        api_key_env="ARHN_TEST_API_KEY",
        concurrency=4,
    )
    return build_backend(spec, Path("unused"))


def test_snippets_over_http_record_tokens_probabilities_model_and_resume_from_cache(backend, tmp_path):
    candidates = toy_candidates(2, 3)
    cache = CallCache(tmp_path / "calls.sqlite")
    config = SnippetConfig(mode="span")
    frame, stats = extract_snippets(candidates, make_triplets(), make_passages(), backend, cache, config, batch_size=4)
    assert frame.height == candidates.height and set(frame["status"]) <= SNIPPET_STATUSES
    assert (frame["prompt_tokens"] > 50).all() and (frame["completion_tokens"] > 0).all()
    assert set(frame["model"]) == {"smollm2@Q4_1"} and stats.calls == candidates.height
    assert frame["answer_probability"].is_between(0.0, 1.0).all()  # the server's `logprobs`
    again, warm = extract_snippets(candidates, make_triplets(), make_passages(), backend, cache, config, batch_size=4)
    assert warm.calls == 0 and again.drop("cached").equals(frame.drop("cached"))


def test_sentence_mode_over_http_uses_the_grammar(server, monkeypatch, tmp_path):
    monkeypatch.setenv("ARHN_TEST_API_KEY", API_KEY)
    backend = OpenAICompatibleBackend(server, MODEL, api_key_env="ARHN_TEST_API_KEY", guided_decoding="llama_cpp")
    candidates = toy_candidates(2, 3)
    frame, _ = extract_snippets(candidates, make_triplets(), make_passages(), backend, CallCache(tmp_path / "c.sqlite"))
    assert set(frame["status"]) <= {"answer", "no_answer"} and frame["answer_probability"].is_not_null().all()


def test_concurrent_requests_come_back_in_order_and_equal_sequential_ones(backend):
    passages = make_passages()["text"].to_list()[:4]
    requests = [GenerationRequest(snippet_prompt("What makes bread rise?", p).messages, 16) for p in passages]
    concurrent = backend.generate(requests)
    backend.concurrency = 1
    sequential = backend.generate(requests)
    assert [c.text for c in concurrent] == [c.text for c in sequential]
    assert all(c.latency_seconds > 0 for c in concurrent)


def test_grammar_constrained_rankings_are_well_formed(server, monkeypatch):
    monkeypatch.setenv("ARHN_TEST_API_KEY", API_KEY)
    backend = OpenAICompatibleBackend(server, MODEL, api_key_env="ARHN_TEST_API_KEY", guided_decoding="llama_cpp")
    passages = make_passages()["text"].to_list()
    windows = [passages[:5], passages[:12]]  # 12: two-digit ids must not be read as two ids
    prompts = [ranking_prompt("What makes bread rise?", w) for w in windows]
    completions = backend.generate(
        [GenerationRequest(p.messages, p.max_new_tokens, ranking(len(w))) for p, w in zip(prompts, windows)]
    )
    for completion, window in zip(completions, windows):
        parsed = parse_ranking(completion.text, len(window), r"^\s*\[\d+\](\s*>\s*\[\d+\])*\s*$")
        assert parsed.status in {"ok", "repetition"}, completion.text  # GBNF fixes the format, not uniqueness
        assert sorted(parsed.order) == list(range(len(window))) and parsed.out_of_range == 0


def test_a_wrong_api_key_is_a_clear_error(server, monkeypatch):
    monkeypatch.setenv("ARHN_TEST_API_KEY", "wrong")
    backend = OpenAICompatibleBackend(server, MODEL, api_key_env="ARHN_TEST_API_KEY", max_retries=0)
    with pytest.raises(ServerError, match="HTTP 401"):
        backend.generate([GenerationRequest((("user", "hi"),), 4)])


def test_a_model_the_server_does_not_serve_is_named_with_what_it_serves(server, monkeypatch):
    monkeypatch.setenv("ARHN_TEST_API_KEY", API_KEY)
    backend = OpenAICompatibleBackend(server, "qwen3-8b", api_key_env="ARHN_TEST_API_KEY")
    with pytest.raises(ServerError, match=r"does not serve model 'qwen3-8b'; it serves \['smollm2'\]"):
        backend.generate([GenerationRequest((("user", "hi"),), 4)])


def test_no_server_fails_after_the_configured_retries():
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{free_port()}/v1", MODEL, max_retries=1, timeout_seconds=5)
    with pytest.raises(ServerError, match="no OpenAI-compatible server answered after 1 retries"):
        backend.generate([GenerationRequest((("user", "hi"),), 4)])


def test_retries_with_backoff_reach_a_server_that_comes_up_late(monkeypatch):
    """The first attempts are refused; the client backs off and retries until the server is up."""
    monkeypatch.setenv("ARHN_TEST_API_KEY", API_KEY)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    late: list[subprocess.Popen] = []
    starter = threading.Timer(1.0, lambda: late.append(start_server(port)))
    starter.start()
    try:
        backend = OpenAICompatibleBackend(base_url, MODEL, api_key_env="ARHN_TEST_API_KEY", max_retries=8)
        began = time.monotonic()
        [completion] = backend.generate([GenerationRequest((("user", "Say hello."),), 8)])
        assert completion.completion_tokens > 0 and time.monotonic() - began > 1.0
    finally:
        starter.join()
        for process in late:
            stop(process)
