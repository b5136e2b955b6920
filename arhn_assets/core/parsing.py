"""Parsing LLM completions defensively: every completion gets a status, never an exception.

Rankings follow rank_llm: keep the digits, drop repeats and ids out of range, append the missing
ids in input order, and say which of these happened (`ok | wrong_format | repetition |
missing_documents`) so a repaired ranking is never mistaken for a clean one.

Snippets must be verbatim: the span is looked up in the passage after Unicode (NFKC) and
whitespace normalisation, and the passage's own text is returned; a span that is not there is
`ungrounded`, which downstream counts and treats as no answer.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# `error`: the backend failed on this request (its reason is in the completion's `error`): nothing
# was parsed, and the call is not cached, so the next run asks again.
RankingStatus = Literal["ok", "wrong_format", "repetition", "missing_documents", "error"]
SnippetStatus = Literal["answer", "no_answer", "ungrounded", "invalid", "error"]

DIGITS = re.compile(r"\d+")
QUOTES = "\"'`“”‘’«»„‚‹›"
TRAILING_PUNCTUATION = ".,;:!?)]}»”’\"' "
# Ids longer than this are no candidate number: they would only cost int() time on hostile input.
MAX_ID_DIGITS = 6


def strip_thinking(text: str) -> str:
    """Remove reasoning: `<think>…</think>` blocks (Qwen3), everything after an unclosed `<think>`,
    and everything before a lone `</think>` (models whose template opens the block in the prompt).
    A linear scan: a regex would go quadratic on many unclosed tags."""
    lowered = text.lower()
    kept: list[str] = []
    position = 0
    while True:
        start = lowered.find("<think>", position)
        close = lowered.find("</think>", position)
        if close != -1 and (start == -1 or close < start):
            kept, position = [], close + len("</think>")  # a lone closing tag ends reasoning so far
            continue
        if start == -1:
            kept.append(text[position:])
            return "".join(kept)
        kept.append(text[position:start])
        end = lowered.find("</think>", start)
        if end == -1:
            return "".join(kept)
        position = end + len("</think>")


@dataclass(frozen=True)
class RankingParse:
    order: list[int]  # a permutation of range(n): positions in the window, best first
    status: RankingStatus
    repeated: int = 0
    out_of_range: int = 0
    missing: int = 0


def failed_ranking(n: int) -> RankingParse:
    """A window the backend failed on: the order it was shown in, with status `error`."""
    return RankingParse(list(range(n)), "error", missing=n)


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


def failed_snippet(reason: str) -> SnippetParse:
    """A request the backend failed on: status `error`, and the reason where the completion goes."""
    return SnippetParse("error", None, reason)


def _normalized_with_offsets(text: str) -> tuple[str, list[int], list[int]]:
    """NFKC-normalise `text` with whitespace runs collapsed to one space (case kept); for each
    character of the result, the [start, end) of the source characters it came from.

    Normalised per base character with its combining marks, so 'e' + U+0301 and 'é' agree."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    index, length = 0, len(text)
    while index < length:
        end = index + 1
        while end < length and unicodedata.combining(text[end]):
            end += 1
        for piece in unicodedata.normalize("NFKC", text[index:end]):
            if piece.isspace():
                if out and out[-1] == " ":
                    ends[-1] = end
                    continue
                piece = " "
            out.append(piece)
            starts.append(index)
            ends.append(end)
        index = end
    return "".join(out), starts, ends


def find_verbatim(span: str, passage: str) -> str | None:
    """The passage's own text of `span`, matched after normalisation, or None."""
    needle = _normalized_with_offsets(span)[0].strip()
    if not needle:
        return None
    haystack, starts, ends = _normalized_with_offsets(passage)
    start = haystack.find(needle)
    if start < 0:
        return None
    found = passage[starts[start] : ends[start + len(needle) - 1]]
    return found.strip() or None


def parse_snippet(
    text: str, passage: str, no_answer_token: str = "NO_ANSWER", strip_prefix: str | None = None
) -> SnippetParse:
    raw = text or ""
    body = strip_thinking(raw).strip()
    # The span as written first: a label-like first word ("Answer-set programming …") may be
    # part of the answer; then without a leading label ("Answer: …").
    unlabeled = re.sub(strip_prefix, "", body, count=1, flags=re.IGNORECASE).strip() if strip_prefix else body
    if not unlabeled:
        return SnippetParse("invalid", None, raw)
    marker = re.sub(r"[^A-Z]", "", no_answer_token.upper())
    if re.sub(r"[^A-Z]", "", unlabeled.upper()) == marker or unlabeled.upper().startswith(no_answer_token.upper()):
        return SnippetParse("no_answer", None, raw)
    candidates = [
        variant
        for form in (body, unlabeled)
        for variant in (form, form.strip(QUOTES), form.strip(QUOTES).rstrip(TRAILING_PUNCTUATION))
    ]
    for candidate in dict.fromkeys(c for c in candidates if c):
        found = find_verbatim(candidate, passage)
        if found is not None:
            return SnippetParse("answer", found, raw)
    return SnippetParse("ungrounded", None, raw)


SENTENCE_CHOICE = re.compile(r"^\s*(?:\[?(\d{1,6})\]?)\s*(?:(?:-|–|to)\s*\[?(\d{1,6})\]?)?\s*\.?\s*$")


def parse_sentence_choice(
    text: str, sentences: list[tuple[int, int]], passage: str, no_answer_token: str = "NO_ANSWER"
) -> SnippetParse:
    """Stage 1 in sentence mode: `3`, `2-4` or NO_ANSWER, over `sentences` ((start, end) offsets
    into `passage`, numbered from 1). The snippet is the passage's own text from the first chosen
    sentence to the last, so it is verbatim by construction; a number outside the passage or any
    other answer is `invalid`."""
    raw = text or ""
    body = strip_thinking(raw).strip()
    if not body:
        return SnippetParse("invalid", None, raw)
    if re.sub(r"[^A-Z]", "", body.upper()) == re.sub(r"[^A-Z]", "", no_answer_token.upper()):
        return SnippetParse("no_answer", None, raw)
    match = SENTENCE_CHOICE.match(unicodedata.normalize("NFKC", body))
    if match is None:
        return SnippetParse("invalid", None, raw)
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    first, last = min(first, last), max(first, last)
    if not 1 <= first <= last <= len(sentences):
        return SnippetParse("invalid", None, raw)
    span = passage[sentences[first - 1][0] : sentences[last - 1][1]].strip()
    return SnippetParse("answer", span, raw) if span else SnippetParse("invalid", None, raw)


def answer_probability(
    first_token: Sequence[tuple[str, float]] | None, no_answer_token: str = "NO_ANSWER", numbers_only: bool = False
) -> float | None:
    """P(the completion does not start NO_ANSWER), from the first token's alternatives.

    A token counts for NO_ANSWER when its text (stripped, any case) starts the marker ('N', 'NO',
    'No', 'NO_'...). The other listed tokens count for an answer: all of them for a free span,
    only numbers when the answer is a sentence number (`numbers_only`, the tokens a grammar would
    allow). The two masses are renormalised over each other, which is the probability a
    constrained decoder sees; None when the backend gave no alternatives or none of either kind."""
    if not first_token:
        return None
    marker = no_answer_token.lower()
    no = answer = 0.0
    for token, logprob in first_token:
        piece = token.strip().lower()
        if not piece:
            continue
        if marker.startswith(piece):
            no += math.exp(logprob)
        elif not numbers_only or piece[0].isdigit():
            answer += math.exp(logprob)
    return answer / (answer + no) if answer + no > 0 else None
