"""Stage 1, snippets: per (query, candidate) the verbatim answer span the LLM extracts, or NO_ANSWER.

Every span is checked against its passage (`parsing.parse_snippet`): a span that is not in the
passage is `ungrounded`, counted, and treated downstream as no answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from arhn_assets.core.beir_io import passage_texts
from arhn_assets.core.llm.base import GenerationRequest, LLMBackend
from arhn_assets.core.llm.cache import CallCache, CallStats, cached_generate
from arhn_assets.core.mining import judged
from arhn_assets.core.parsing import parse_snippet
from arhn_assets.core.prompts import load_template, snippet_prompt

SNIPPETS_SCHEMA = {
    "dataset": pl.String,
    "query_id": pl.String,
    "doc_id": pl.String,
    "is_original_positive": pl.Boolean,
    "snippet": pl.String,
    "status": pl.String,  # answer | no_answer | ungrounded | invalid
    "completion": pl.String,  # the raw completion, for audits of ungrounded and invalid rows
    "model": pl.String,
    "prompt_version": pl.Int64,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cached": pl.Boolean,
}


@dataclass(frozen=True)
class SnippetConfig:
    max_words: int = 300
    batch_size: int = 32
    template: str = "answer_snippet"


def extract_snippets(
    candidates: pl.DataFrame,
    triplets: pl.DataFrame,
    passages: pl.DataFrame,
    backend: LLMBackend,
    cache: CallCache,
    config: SnippetConfig = SnippetConfig(),
) -> tuple[pl.DataFrame, CallStats]:
    spec = load_template(config.template)
    query_text = dict(triplets.select("query_id", "query_text").iter_rows())
    texts = passage_texts(passages)
    rows = judged(candidates).select("dataset", "query_id", "doc_id", "source").rows()
    prompts = [snippet_prompt(query_text[q], texts[d], config.max_words, config.template) for _, q, d, _ in rows]
    requests = [GenerationRequest(p.messages, p.max_new_tokens) for p in prompts]
    stats = CallStats()
    completions = cached_generate(backend, cache, spec["name"], spec["version"], requests, config.batch_size, stats)
    out = []
    for (dataset, query_id, doc_id, source), completion in zip(rows, completions):
        parsed = parse_snippet(completion.text, texts[doc_id], spec["no_answer_token"], spec.get("strip_prefix"))
        out.append((
            dataset, query_id, doc_id, source == "positive", parsed.snippet, parsed.status, completion.text,
            backend.identity, spec["version"], completion.prompt_tokens, completion.completion_tokens, completion.cached,
        ))
    return pl.DataFrame(out, schema=SNIPPETS_SCHEMA, orient="row"), stats
