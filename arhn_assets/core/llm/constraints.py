"""Output languages a backend can enforce while decoding: a complete ranking `[a] > [b] > …`,
and the sentence choice of stage 1 (`NO_ANSWER`, a sentence number, or a range `a-b`).

Each is written once per grammar dialect: llama.cpp's GBNF (the embedded backend and llama.cpp
servers) and a regular expression (vLLM's structured outputs). A constraint fixes the format,
never the content: the parsers still check every completion and record a status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SEPARATOR = " > "
NO_ANSWER = "NO_ANSWER"


def _numbers(n: int) -> list[str]:
    return [str(i) for i in range(n, 0, -1)]  # longest first, so "12" is not read as "1" then "2"


@dataclass(frozen=True)
class OutputConstraint:
    kind: Literal["ranking", "sentences"]
    size: int  # passages in the ranking window, or sentences in the passage

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"a {self.kind} constraint needs at least one item, got {self.size}")

    def regex(self) -> str:
        one = "(?:" + "|".join(_numbers(self.size)) + ")"
        if self.kind == "sentences":
            return f"{NO_ANSWER}|{one}(?:-{one})?"
        # Uniqueness of ids is not regular at any sane size: the parser repairs and counts repeats.
        item = r"\[" + one + r"\]"
        return item + (f"(?:{SEPARATOR}{item}){{{self.size - 1}}}" if self.size > 1 else "")

    def gbnf(self) -> str:
        ids = "number ::= " + " | ".join(f'"{i}"' for i in _numbers(self.size)) + "\n"
        if self.kind == "sentences":
            return f'root ::= "{NO_ANSWER}" | number | number "-" number\n' + ids
        body = f' "{SEPARATOR}" '.join(["item"] * self.size)
        return f'root ::= {body}\nitem ::= "[" number "]"\n' + ids


def ranking(n: int) -> OutputConstraint:
    return OutputConstraint("ranking", n)


def sentences(n: int) -> OutputConstraint:
    return OutputConstraint("sentences", n)
