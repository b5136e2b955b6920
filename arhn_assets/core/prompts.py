"""Prompts as versioned data: the YAML templates in `prompt_templates/`, rendered into chat messages.

A rendered prompt carries its template name and version; the LLM call cache keys on those and on
the messages themselves, so editing a template (and bumping its version) or changing the task
instruction never serves stale answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).parent / "prompt_templates"
BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Prompt:
    template: str
    version: int
    messages: tuple[tuple[str, str], ...]  # (role, content)
    max_new_tokens: int

    def as_chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


@cache
def load_template(name: str, directory: Path = TEMPLATE_DIR) -> dict:
    path = directory / f"{name}.yaml"
    template = yaml.safe_load(path.read_text(encoding="utf-8"))
    version = template.get("version") if isinstance(template, dict) else None
    if (
        not isinstance(template, dict)
        or template.get("name") != name
        or not isinstance(version, int)
        or isinstance(version, bool)
    ):
        raise ValueError(f"{path}: a template needs 'name: {name}' and an integer 'version'")
    return template


def truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    return " ".join(words[:max_words])


def sanitize_passage(text: str) -> str:
    """`[3]` inside a passage would read as a candidate id in the ranking; write it as `(3)`."""
    return BRACKETED_NUMBER.sub(r"(\1)", text)


def _task(spec: dict, instruction: str) -> str:
    return spec["task"].format(instruction=instruction) if instruction else ""


def snippet_prompt(query: str, passage: str, max_words: int = 300, instruction: str = "") -> Prompt:
    """Stage 1, span mode: the passage's first `max_words` words."""
    spec = load_template("answer_snippet")
    user = spec["user"].format(
        task=_task(spec, instruction), query=query.strip(), passage=truncate_words(passage, max_words)
    )
    return Prompt(spec["name"], spec["version"], (("system", spec["system"]), ("user", user)), spec["max_new_tokens"])


def sentence_prompt(query: str, sentences: list[str], instruction: str = "") -> Prompt:
    """Stage 1, sentence mode: the passage's sentences numbered from 1, one per line."""
    spec = load_template("answer_sentence")
    lines = "\n".join(
        spec["sentence"].format(id=i, sentence=sanitize_passage(" ".join(s.split())))
        for i, s in enumerate(sentences, 1)
    )
    user = spec["user"].format(task=_task(spec, instruction), query=query.strip(), sentences=lines)
    return Prompt(spec["name"], spec["version"], (("system", spec["system"]), ("user", user)), spec["max_new_tokens"])


def ranking_prompt(query: str, passages: list[str], max_words: int = 100, instruction: str = "") -> Prompt:
    """RankGPT layout: `[1] passage` … for the window's passages, in the order given."""
    spec = load_template("answerability_ranking")
    query = query.strip()
    lines = [
        spec["passage"].format(id=i, passage=sanitize_passage(truncate_words(text, max_words)))
        for i, text in enumerate(passages, start=1)
    ]
    user = "\n".join(
        [
            spec["prefix"].format(num=len(passages), query=query),
            *([_task(spec, instruction)] if instruction else []),
            *lines,
            spec["suffix"].format(num=len(passages), query=query),
        ]
    )
    budget = len(" > ".join(f"[{i}]" for i in range(1, len(passages) + 1))) + spec["max_new_tokens_slack"]
    return Prompt(spec["name"], spec["version"], (("system", spec["system"]), ("user", user)), budget)
