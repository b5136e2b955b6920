"""Constrained decoding for rankings: the model may only write a complete permutation.

A character-level recogniser of `[a] > [b] > … > [z]` over ids 1..n, each used once, lifted to
tokens: at each step a token is allowed when the text so far plus the token is still a prefix of
some complete ranking, and end-of-sequence only once all n ids are written. The model's scores
still choose the order; the format can no longer fail. Written by hand because transformers has
no grammar engine of its own (llama.cpp's GBNF or vLLM's guided decoding do this server-side).
"""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = " > "
ALPHABET = set("[]> 0123456789")


@dataclass
class _State:
    ok: bool
    complete: bool


def ranking_prefix_state(text: str, n: int) -> _State:
    used: set[int] = set()
    number = ""
    expect = "open"  # open | digits | separator | end
    separator_at = 0
    for char in text:
        if expect == "open":
            if char != "[":
                return _State(False, False)
            expect, number = "digits", ""
        elif expect == "digits":
            if "0" <= char <= "9":
                number += char
                if number.startswith("0") or int(number) > n:
                    return _State(False, False)
            elif char == "]" and number:
                if int(number) in used:
                    return _State(False, False)
                used.add(int(number))
                expect, separator_at = ("end" if len(used) == n else "separator"), 0
            else:
                return _State(False, False)
        elif expect == "separator":
            if char != SEPARATOR[separator_at]:
                return _State(False, False)
            separator_at += 1
            if separator_at == len(SEPARATOR):
                expect = "open"
        else:
            return _State(False, False)
    if expect == "digits" and number:
        extendable = any(str(k).startswith(number) and k not in used for k in range(1, n + 1))
        return _State(extendable, False)
    return _State(True, expect == "end")


class RankingConstraint:
    """`prefix_allowed_tokens_fn` for transformers' generate, one window size per batch row."""

    def __init__(self, tokenizer, sizes: list[int | None], prompt_length: int):
        self.sizes = sizes
        self.prompt_length = prompt_length
        self.eos = tokenizer.eos_token_id
        self.everything = list(range(len(tokenizer)))
        self.tokens = candidate_tokens(tokenizer)

    def __call__(self, row: int, input_ids) -> list[int]:
        n = self.sizes[row]
        if n is None:
            return self.everything
        written = "".join(self.tokens.get(t, "\x00") for t in input_ids[self.prompt_length :].tolist() if t != self.eos)
        state = ranking_prefix_state(written, n)
        if state.complete or not state.ok:
            return [self.eos]
        allowed = [t for t, piece in self.tokens.items() if ranking_prefix_state(written + piece, n).ok]
        return allowed or [self.eos]


_CANDIDATES: dict[int, dict[int, str]] = {}


def candidate_tokens(tokenizer) -> dict[int, str]:
    """Token id -> text, for the tokens made only of ranking characters (computed once per tokenizer)."""
    key = id(tokenizer)
    if key not in _CANDIDATES:
        pieces = {}
        for token_id in range(len(tokenizer)):
            piece = tokenizer.decode([token_id])
            if piece and set(piece) <= ALPHABET:
                pieces[token_id] = piece
        _CANDIDATES[key] = pieces
    return _CANDIDATES[key]


def _id_alternatives(n: int) -> list[str]:
    return [str(i) for i in range(n, 0, -1)]  # longest first, so "12" is not read as "1" then "2"


def ranking_regex(n: int) -> str:
    """`[a] > [b] > …` with exactly n ids from 1..n, for servers with regex-guided decoding
    (vLLM's `structured_outputs`). Uniqueness is not regular at any sane size: the parser repairs
    and counts repeated ids."""
    one = r"\[(?:" + "|".join(_id_alternatives(n)) + r")\]"
    return one + (f"(?:{SEPARATOR}{one}){{{n - 1}}}" if n > 1 else "")


def ranking_gbnf(n: int) -> str:
    """The same language as `ranking_regex`, as a llama.cpp GBNF grammar."""
    ids = " | ".join(f'"{i}"' for i in _id_alternatives(n))
    body = ' " > " '.join(["id"] * n)
    return f'root ::= {body}\nid ::= "[" ( {ids} ) "]"\n'
