"""Parsing LLM completions defensively: every completion gets a status, never an exception.

Rankings follow rank_llm: keep the digits, drop repeats and ids out of range, append the missing
ids in input order, and say which of these happened (`ok | wrong_format | repetition |
missing_documents`) so a repaired ranking is never mistaken for a clean one.

Snippets must be verbatim: the span is looked up in the passage after Unicode (NFKC) and
whitespace normalisation, and the passage's own text is returned; a span that is not there is
`ungrounded`, which downstream counts and treats as no answer.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

RankingStatus = Literal["ok", "wrong_format", "repetition", "missing_documents"]
SnippetStatus = Literal["answer", "no_answer", "ungrounded", "invalid"]

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
UNCLOSED_THINK = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
DIGITS = re.compile(r"\d+")
QUOTES = "\"'`“”‘’«»„‚‹›"
TRAILING_PUNCTUATION = ".,;:!?)]}»”’\"' "
# Ids longer than this are no candidate number: they would only cost int() time on hostile input.
MAX_ID_DIGITS = 6


def strip_thinking(text: str) -> str:
    """Remove reasoning blocks (`<think>…</think>`, as Qwen3 emits); an unclosed one is all reasoning."""
    return UNCLOSED_THINK.sub("", THINK_BLOCK.sub("", text))


@dataclass(frozen=True)
class RankingParse:
    order: list[int]  # a permutation of range(n): positions in the window, best first
    status: RankingStatus
    repeated: int = 0
    out_of_range: int = 0
    missing: int = 0


def parse_ranking(text: str, n: int, pattern: str | None = None) -> RankingParse:
    """Parse `[3] > [1] > [2]` for a window of `n` passages numbered from 1."""
    body = strip_thinking(text or "").strip()
    well_formed = bool(re.fullmatch(pattern, body)) if pattern else bool(body)
    seen: list[int] = []
    seen_set: set[int] = set()
    repeated = out_of_range = 0
    for token in DIGITS.findall(unicodedata.normalize("NFKC", body)):
        if len(token) > MAX_ID_DIGITS:
            out_of_range += 1
            continue
        position = int(token) - 1
        if not 0 <= position < n:
            out_of_range += 1
        elif position in seen_set:
            repeated += 1
        else:
            seen.append(position)
            seen_set.add(position)
    missing = [p for p in range(n) if p not in seen_set]
    if not well_formed or out_of_range or not seen:
        status: RankingStatus = "wrong_format"
    elif repeated:
        status = "repetition"
    elif missing:
        status = "missing_documents"
    else:
        status = "ok"
    return RankingParse(seen + missing, status, repeated, out_of_range, len(missing))


@dataclass(frozen=True)
class SnippetParse:
    status: SnippetStatus
    snippet: str | None  # the passage's own text of the span when status is 'answer'
    raw: str


def _normalized_with_offsets(text: str) -> tuple[str, list[int]]:
    """NFKC-normalise, casefold-free, with runs of whitespace collapsed to one space; returns the
    normalised text and, for each of its characters, the index of the source character."""
    out: list[str] = []
    offsets: list[int] = []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKC", char):
            if piece.isspace():
                if out and out[-1] == " ":
                    continue
                piece = " "
            out.append(piece)
            offsets.append(index)
    return "".join(out), offsets


def find_verbatim(span: str, passage: str) -> str | None:
    """The passage's own text of `span`, matched after normalisation, or None."""
    needle, _ = _normalized_with_offsets(span)
    needle = needle.strip()
    if not needle:
        return None
    haystack, offsets = _normalized_with_offsets(passage)
    start = haystack.find(needle)
    if start < 0:
        return None
    end = start + len(needle) - 1
    return passage[offsets[start] : offsets[end] + 1]


def parse_snippet(text: str, passage: str, no_answer_token: str = "NO_ANSWER", strip_prefix: str | None = None) -> SnippetParse:
    raw = text or ""
    body = strip_thinking(raw).strip()
    if strip_prefix:
        body = re.sub(strip_prefix, "", body, count=1, flags=re.IGNORECASE).strip()
    if not body:
        return SnippetParse("invalid", None, raw)
    marker = re.sub(r"[^A-Z]", "", no_answer_token.upper())
    if re.sub(r"[^A-Z]", "", body.upper()) == marker or body.upper().startswith(no_answer_token.upper()):
        return SnippetParse("no_answer", None, raw)
    candidates = [body, body.strip(QUOTES), body.strip(QUOTES).rstrip(TRAILING_PUNCTUATION)]
    for candidate in dict.fromkeys(c for c in candidates if c):
        found = find_verbatim(candidate, passage)
        if found is not None:
            return SnippetParse("answer", found, raw)
    return SnippetParse("ungrounded", None, raw)
