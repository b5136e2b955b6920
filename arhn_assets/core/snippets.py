"""Stage 1, snippets: per (query, candidate) the verbatim answer span the LLM extracts, or NO_ANSWER,
and the probability that it answers at all.

Two modes:
- `span` (the paper's): the model copies the shortest answering span. Every span is checked
  against its passage (`parsing.parse_snippet`): one that is not in the passage is `ungrounded`,
  counted, and treated downstream as no answer;
- `sentence` (for small models): the passage's sentences are numbered (sentencex), the model
  answers with a number or a range under a grammar, and the snippet is those sentences copied
  from the passage, so it is verbatim by construction and costs a few decoded tokens.

Either way, `answer_probability` is read from the first generated token's log-probabilities:
P(not NO_ANSWER), a continuous answerability score that a yes/no decision would throw away
(null where the backend gives no log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from arhn_assets.core.beir_io import passage_texts
from arhn_assets.core.llm.base import GenerationRequest, LLMBackend
from arhn_assets.core.llm.cache import CallCache, CallStats, cached_generate
from arhn_assets.core.llm.constraints import sentences as sentence_constraint
from arhn_assets.core.mining import judged
from arhn_assets.core.parsing import SnippetParse, answer_probability, parse_sentence_choice, parse_snippet
from arhn_assets.core.prompts import Prompt, load_template, sentence_prompt, snippet_prompt, truncate_words

SNIPPETS_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "is_original_positive": pl.Boolean,
    "snippet": pl.String,
    "status": pl.String,  # answer | no_answer | ungrounded | invalid
    "answer_probability": pl.Float64,  # P(not NO_ANSWER) from the first token; null without logprobs
    "completion": pl.String,  # the raw completion, for audits of ungrounded and invalid rows
    "model": pl.String,
    "prompt_template": pl.String,  # answer_snippet (span mode) | answer_sentence (sentence mode)
    "prompt_version": pl.Int64,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cached": pl.Boolean,
}
TEMPLATES = {"span": "answer_snippet", "sentence": "answer_sentence"}
SnippetMode = Literal["span", "sentence"]


@dataclass(frozen=True)
class SnippetConfig:
    max_words: int = 300  # passage words the LLM reads
    batch_size: int = 32
    mode: SnippetMode = "sentence"
    # First-token alternatives asked for `answer_probability` (llama.cpp and vLLM give up to 20).
    top_logprobs: int = 20


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of `text`'s sentences, blank ones dropped. sentencex (a
    maintained rule-based segmenter in Rust, ~20 µs a passage) returns offsets into the text."""
    import sentencex

    return [
        (b["start_index"], b["end_index"])
        for b in sentencex.get_sentence_boundaries("en", text)
        if text[b["start_index"] : b["end_index"]].strip()
    ]


@dataclass(frozen=True)
class _Item:
    passage: str  # what the model reads (truncated to max_words)
    sentences: list[tuple[int, int]]
    prompt: Prompt


def _item(query: str, instruction: str, text: str, config: SnippetConfig) -> _Item:
    passage = truncate_words(text, config.max_words)
    if config.mode == "span":
        return _Item(passage, [], snippet_prompt(query, passage, config.max_words, instruction))
    spans = split_sentences(passage) or [(0, len(passage))]
    return _Item(passage, spans, sentence_prompt(query, [passage[a:b] for a, b in spans], instruction))


def _parse(item: _Item, text: str, mode: SnippetMode, spec: dict) -> SnippetParse:
    if mode == "span":
        return parse_snippet(text, item.passage, spec["no_answer_token"], spec.get("strip_prefix"))
    return parse_sentence_choice(text, item.sentences, item.passage, spec["no_answer_token"])


def extract_snippets(
    candidates: pl.DataFrame,
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    backend: LLMBackend,
    cache: CallCache,
    config: SnippetConfig = SnippetConfig(),
) -> tuple[pl.DataFrame, CallStats]:
    """One row per judged candidate (`SNIPPETS_SCHEMA`); the task instruction is each query's own
    (`raw_triplets.instruction`)."""
    spec = load_template(TEMPLATES[config.mode])
    queries = {q: (text, instruction or "") for q, text, instruction in triplets.select("query_id", "query_text", "instruction").iter_rows()}
    texts = passage_texts(passages)
    rows = judged(candidates).select("dataset", "query_id", "doc_id", "source").rows()
    items = [_item(*queries[q], texts[d], config) for _, q, d, _ in rows]
    requests = [
        GenerationRequest(
            item.prompt.messages, item.prompt.max_new_tokens,
            sentence_constraint(len(item.sentences)) if config.mode == "sentence" else None, config.top_logprobs,
        )
        for item in items
    ]
    stats = CallStats()
    completions = cached_generate(backend, cache, spec["name"], spec["version"], requests, config.batch_size, stats)
    out = []
    for (dataset, query_id, doc_id, source), item, completion in zip(rows, items, completions):
        parsed = _parse(item, completion.text, config.mode, spec)
        probability = answer_probability(completion.first_token_logprobs, spec["no_answer_token"], config.mode == "sentence")
        out.append((
            dataset, query_id, doc_id, source == "positive", parsed.snippet, parsed.status, probability, completion.text,
            backend.identity, spec["name"], spec["version"], completion.prompt_tokens, completion.completion_tokens,
            completion.cached,
        ))
    return pl.DataFrame(out, schema=SNIPPETS_SCHEMA, orient="row"), stats
