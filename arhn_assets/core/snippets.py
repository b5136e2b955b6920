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

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from arhn_assets.core.beir_io import passage_texts
from arhn_assets.core.llm.base import GenerationRequest, LLMBackend
from arhn_assets.core.llm.cache import DEFAULT_BATCH_SIZE, CallCache, CallStats, cached_generate
from arhn_assets.core.llm.constraints import sentences as sentence_constraint
from arhn_assets.core.mining import judged
from arhn_assets.core.parsing import (
    SnippetParse,
    answer_probability,
    failed_snippet,
    find_verbatim,
    parse_sentence_choice,
    parse_snippet,
)
from arhn_assets.core.progress import Log
from arhn_assets.core.prompts import load_template, sentence_prompt, snippet_prompt, truncate_words

SNIPPETS_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "is_original_positive": pl.Boolean,
    "snippet": pl.String,
    "status": pl.String,  # answer | no_answer | ungrounded | invalid | error (the backend failed; retried next run)
    "answer_probability": pl.Float64,  # P(not NO_ANSWER) from the first token; null without logprobs
    "completion": pl.String,  # the raw completion, for audits of ungrounded and invalid rows; an error's reason
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
    max_words: int = field(default=300, metadata={"doc": "passage words the LLM reads"})
    mode: SnippetMode = field(
        default="sentence",
        metadata={
            "doc": "span: the paper's free answer span; sentence: numbered sentences chosen under a "
            "grammar (for small models)"
        },
    )
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
class SnippetTask:
    """One (query, passage) as stage 1 asks it: what the model reads and the request it gets."""

    text: str  # the passage as stored: snippets are returned as its own characters
    passage: str  # what the model reads: the passage cut to max_words (whitespace collapsed)
    sentences: list[tuple[int, int]]  # sentence mode: offsets of the numbered sentences in `passage`
    request: GenerationRequest

    def parse(self, completion: str, spec: dict) -> SnippetParse:
        if not self.sentences:
            return parse_snippet(completion, self.text, spec["no_answer_token"], spec.get("strip_prefix"))
        parsed = parse_sentence_choice(completion, self.sentences, self.passage, spec["no_answer_token"])
        if parsed.snippet is None:
            return parsed
        # The chosen sentences in the stored passage's own characters (its line breaks, its spaces).
        return SnippetParse(parsed.status, find_verbatim(parsed.snippet, self.text) or parsed.snippet, parsed.raw)


def snippet_task(query: str, instruction: str, text: str, config: SnippetConfig) -> SnippetTask:
    passage = truncate_words(text, config.max_words)
    if config.mode == "span":
        prompt, spans, constraint = snippet_prompt(query, passage, config.max_words, instruction), [], None
    else:
        spans = split_sentences(passage) or [(0, len(passage))]
        prompt = sentence_prompt(query, [passage[a:b] for a, b in spans], instruction)
        constraint = sentence_constraint(len(spans))
    request = GenerationRequest(prompt.messages, prompt.max_new_tokens, constraint, config.top_logprobs)
    return SnippetTask(text, passage, spans, request)


def extract_snippets(
    candidates: pl.DataFrame,
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    backend: LLMBackend,
    cache: CallCache,
    config: SnippetConfig = SnippetConfig(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    log: Log | None = None,
) -> tuple[pl.DataFrame, CallStats]:
    """One row per judged candidate (`SNIPPETS_SCHEMA`); the task instruction is each query's own
    (`raw_triplets.instruction`). `batch_size` requests go to the backend at a time, each batch
    cached as it returns."""
    spec = load_template(TEMPLATES[config.mode])
    queries = {
        q: (text, instruction or "")
        for q, text, instruction in triplets.select("query_id", "query_text", "instruction").iter_rows()
    }
    texts = passage_texts(passages)
    rows = judged(candidates).select("dataset", "query_id", "doc_id", "source").rows()
    tasks = [snippet_task(*queries[q], texts[d], config) for _, q, d, _ in rows]
    stats = CallStats()
    completions = cached_generate(
        backend, cache, spec["name"], spec["version"], [t.request for t in tasks], batch_size, stats, log
    )
    out = []
    for (dataset, query_id, doc_id, source), task, completion in zip(rows, tasks, completions):
        parsed = failed_snippet(completion.error) if completion.error else task.parse(completion.text, spec)
        probability = answer_probability(
            completion.first_token_logprobs, spec["no_answer_token"], config.mode == "sentence"
        )
        out.append(
            (
                dataset,
                query_id,
                doc_id,
                source == "positive",
                parsed.snippet,
                parsed.status,
                probability,
                parsed.raw if completion.error else completion.text,
                backend.identity,
                spec["name"],
                spec["version"],
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.cached,
            )
        )
    return pl.DataFrame(out, schema=SNIPPETS_SCHEMA, orient="row"), stats
