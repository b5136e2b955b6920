"""Tests for arhn_assets.core.prompts: versioned YAML templates rendered into chat messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arhn_assets.core.llm.base import GenerationRequest
from arhn_assets.core.llm.cache import call_key
from arhn_assets.core.llm.constraints import ranking, sentences
from arhn_assets.core.prompts import (
    TEMPLATE_DIR,
    Prompt,
    load_template,
    ranking_prompt,
    sentence_prompt,
    snippet_prompt,
)

TEMPLATES = ["answer_snippet", "answer_sentence", "answerability_ranking"]
INSTRUCTION = (
    "The query is a scientific claim. A passage answers it when it reports evidence that supports or refutes the claim."
)
QUERY = "How tall is the Eiffel Tower?"
PASSAGE_LINE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# --------------------------------------------------------------------------------------------
# load_template
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_load_with_integer_version(name):
    spec = load_template(name)
    assert spec["name"] == name
    assert type(spec["version"]) is int
    assert spec["version"] >= 1
    assert isinstance(spec["system"], str) and spec["system"].strip()


def test_template_files_exist_in_template_dir():
    for name in TEMPLATES:
        assert (TEMPLATE_DIR / f"{name}.yaml").is_file()


def test_snippet_template_fields():
    spec = load_template("answer_snippet")
    assert spec["no_answer_token"] == "NO_ANSWER"
    assert "{query}" in spec["user"] and "{passage}" in spec["user"]
    assert type(spec["max_new_tokens"]) is int and spec["max_new_tokens"] > 0
    re.compile(spec["strip_prefix"])


def test_ranking_template_fields():
    spec = load_template("answerability_ranking")
    assert "{id}" in spec["passage"] and "{passage}" in spec["passage"]
    assert "{query}" in spec["prefix"] and "{query}" in spec["suffix"]
    assert type(spec["max_new_tokens_slack"]) is int and spec["max_new_tokens_slack"] >= 0
    assert re.fullmatch(spec["output_pattern"], "[2] > [1] > [3]")


def test_load_template_is_cached():
    assert load_template("answer_snippet") is load_template("answer_snippet")
    assert hasattr(load_template, "__wrapped__")


def test_load_template_from_a_directory(tmp_path: Path):
    (tmp_path / "custom.yaml").write_text("name: custom\nversion: 7\nsystem: hi\n", encoding="utf-8")
    spec = load_template.__wrapped__("custom", tmp_path)
    assert spec == {"name": "custom", "version": 7, "system": "hi"}


@pytest.mark.parametrize(
    "content",
    [
        "name: answer_snippet_v2\nversion: 1\n",  # name does not match the file
        "version: 1\n",  # no name
        "name: custom\nversion: '1'\n",  # version is a string
        "name: custom\nversion: 1.5\n",  # version is a float
        "name: custom\n",  # no version
    ],
)
def test_load_template_rejects_bad_template(tmp_path: Path, content: str):
    path = tmp_path / "custom.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path))) as excinfo:
        load_template.__wrapped__("custom", tmp_path)
    assert "custom.yaml" in str(excinfo.value)
    assert "name: custom" in str(excinfo.value)


def test_load_template_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        load_template.__wrapped__("absent", tmp_path)


# --------------------------------------------------------------------------------------------
# snippet_prompt
# --------------------------------------------------------------------------------------------


def test_snippet_prompt_messages():
    spec = load_template("answer_snippet")
    passage = "The Eiffel Tower is 330 metres tall."
    prompt = snippet_prompt(QUERY, passage)
    assert isinstance(prompt, Prompt)
    assert prompt.template == "answer_snippet"
    assert prompt.version == spec["version"]
    assert prompt.max_new_tokens == spec["max_new_tokens"]
    assert [role for role, _ in prompt.messages] == ["system", "user"]
    system, user = (content for _, content in prompt.messages)
    assert system == spec["system"]
    assert QUERY in user
    assert passage in user
    assert user == spec["user"].format(task="", query=QUERY, passage=passage)
    assert "NO_ANSWER" in user
    assert prompt.as_chat() == [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_snippet_prompt_strips_query():
    user = snippet_prompt(f"  \n{QUERY}\t ", "p").messages[1][1]
    assert f"Query: {QUERY}\n" in user


@pytest.mark.parametrize(("n_words", "max_words"), [(500, 300), (10, 3), (301, 300), (300, 300), (5, 300)])
def test_snippet_prompt_truncates_passage(n_words, max_words):
    passage = words(n_words)
    user = snippet_prompt(QUERY, passage, max_words=max_words).messages[1][1]
    kept = re.findall(r"\bw\d+\b", user)
    assert kept == [f"w{i}" for i in range(min(n_words, max_words))]


def test_snippet_prompt_default_truncation_is_300_words():
    user = snippet_prompt(QUERY, words(1000)).messages[1][1]
    assert len(re.findall(r"\bw\d+\b", user)) == 300


def key(prompt: Prompt, constraint=None, top_logprobs: int = 0, model: str = "llama.cpp:m.gguf@sha256:0") -> str:
    """The call cache's key of a prompt, as the stages build their requests."""
    request = GenerationRequest(prompt.messages, prompt.max_new_tokens, constraint, top_logprobs)
    return call_key(model, prompt.template, prompt.version, request)


def test_snippet_cache_keys_follow_what_the_model_reads():
    passage = "The Eiffel Tower is 330 metres tall."
    first = key(snippet_prompt(QUERY, passage))
    assert key(snippet_prompt(QUERY, passage)) == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert key(snippet_prompt(QUERY, passage + " It opened in 1889.")) != first
    assert key(snippet_prompt("How old is the Eiffel Tower?", passage)) != first
    assert key(snippet_prompt(QUERY, passage), model="llama.cpp:other.gguf@sha256:1") != first
    # Words past max_words never reach the model, so they never change the key.
    assert key(snippet_prompt(QUERY, words(5) + " extra", max_words=5)) == key(
        snippet_prompt(QUERY, words(5), max_words=5)
    )


def test_cache_keys_include_the_mode_the_instruction_and_the_decoding():
    passage = "The Eiffel Tower is 330 metres tall. It opened in 1889."
    span = key(snippet_prompt(QUERY, passage))
    sentence = key(sentence_prompt(QUERY, ["The Eiffel Tower is 330 metres tall.", "It opened in 1889."]), sentences(2))
    instructed = key(snippet_prompt(QUERY, passage, instruction=INSTRUCTION))
    assert len({span, sentence, instructed}) == 3
    assert key(snippet_prompt(QUERY, passage), top_logprobs=20) != span
    window = ranking_prompt(QUERY, ["a", "b"])
    assert key(window, ranking(2)) != key(window) != key(ranking_prompt(QUERY, ["a", "b"], instruction=INSTRUCTION))


def test_the_instruction_opens_the_snippet_prompts_and_follows_the_ranking_prefix():
    for prompt in (
        snippet_prompt(QUERY, "p", instruction=INSTRUCTION),
        sentence_prompt(QUERY, ["p."], instruction=INSTRUCTION),
    ):
        assert prompt.messages[1][1].startswith(f"Task: {INSTRUCTION}\n\nQuery: {QUERY}")
    assert "Task:" not in snippet_prompt(QUERY, "p").messages[1][1]
    lines = ranking_prompt(QUERY, ["alpha"], instruction=INSTRUCTION).messages[1][1].splitlines()
    assert lines[1] == f"Task: {INSTRUCTION}" and lines[2] == "[1] alpha"


def test_sentence_prompt_numbers_sentences_one_per_line():
    prompt = sentence_prompt(QUERY, ["The tower is 330 m tall.\n", "See [3]   for more."])
    user = prompt.messages[1][1]
    assert "[1] The tower is 330 m tall.\n[2] See (3) for more.\n" in user
    assert (
        prompt.template == "answer_sentence"
        and prompt.max_new_tokens == load_template("answer_sentence")["max_new_tokens"]
    )


# --------------------------------------------------------------------------------------------
# ranking_prompt
# --------------------------------------------------------------------------------------------


def passage_lines(prompt: Prompt) -> list[tuple[int, str]]:
    return [(int(i), text) for i, text in PASSAGE_LINE.findall(prompt.messages[1][1])]


def test_ranking_prompt_messages():
    spec = load_template("answerability_ranking")
    prompt = ranking_prompt(QUERY, ["alpha", "beta", "gamma"])
    assert prompt.template == "answerability_ranking"
    assert prompt.version == spec["version"]
    assert [role for role, _ in prompt.messages] == ["system", "user"]
    assert prompt.messages[0][1] == spec["system"]


def test_ranking_prompt_numbers_passages_in_order():
    passages = ["alpha text", "beta text", "gamma text", "delta text"]
    prompt = ranking_prompt(QUERY, passages)
    assert passage_lines(prompt) == [(1, "alpha text"), (2, "beta text"), (3, "gamma text"), (4, "delta text")]
    user = prompt.messages[1][1]
    assert user.index("[1] alpha") < user.index("[2] beta") < user.index("[3] gamma") < user.index("[4] delta")


def test_ranking_prompt_rewrites_bracketed_numbers_in_passages():
    passages = ["See reference [3] for details [12].", "No brackets here", "Array a[0] and [x]"]
    lines = passage_lines(ranking_prompt(QUERY, passages))
    assert lines == [
        (1, "See reference (3) for details (12)."),
        (2, "No brackets here"),
        (3, "Array a(0) and [x]"),
    ]
    for _, text in lines:
        assert not re.search(r"\[\d+\]", text)


def test_ranking_prompt_truncates_each_passage():
    passages = [words(250, "a"), words(50, "b"), words(101, "c")]
    lines = passage_lines(ranking_prompt(QUERY, passages, max_words=100))
    assert [len(text.split()) for _, text in lines] == [100, 50, 100]
    assert lines[0][1] == words(100, "a")
    assert lines[2][1].split()[-1] == "c99"


def test_ranking_prompt_default_truncation_is_100_words():
    lines = passage_lines(ranking_prompt(QUERY, [words(400)]))
    assert len(lines[0][1].split()) == 100


def test_ranking_prompt_query_in_prefix_and_suffix():
    spec = load_template("answerability_ranking")
    passages = ["alpha", "beta", "gamma"]
    user = ranking_prompt(f"  {QUERY}\n", passages).messages[1][1]
    prefix = spec["prefix"].format(num=3, query=QUERY)
    suffix = spec["suffix"].format(num=3, query=QUERY)
    assert user.startswith(prefix + "\n")
    assert user.endswith("\n" + suffix)
    assert user.count(QUERY) == 2
    assert user.index(QUERY) < user.index("[1] alpha") < user.rindex(QUERY)
    assert "3 passages" in prefix and "3 passages" in suffix


def test_ranking_prompt_max_new_tokens_grows_with_n():
    spec = load_template("answerability_ranking")
    budgets = [ranking_prompt(QUERY, [f"passage {i}" for i in range(n)]).max_new_tokens for n in range(1, 31)]
    assert all(a < b for a, b in zip(budgets, budgets[1:]))
    # A window of 20 can always be written out, even at one token per character.
    full = " > ".join(f"[{i}]" for i in range(20, 0, -1))
    assert budgets[19] == len(full) + spec["max_new_tokens_slack"]


def test_ranking_cache_keys_depend_on_order():
    passages = ["alpha text", "beta text", "gamma text"]
    first = key(ranking_prompt(QUERY, passages))
    assert key(ranking_prompt(QUERY, list(passages))) == first
    assert key(ranking_prompt(QUERY, passages[::-1])) != first
    assert key(ranking_prompt(QUERY, [passages[1], passages[0], passages[2]])) != first
    assert key(ranking_prompt(QUERY, passages[:2])) != first


@pytest.mark.parametrize("content", ["", "name: broken\nversion: true\n"])
def test_empty_templates_and_boolean_versions_are_refused(tmp_path, content):
    (tmp_path / "broken.yaml").write_text(content)
    with pytest.raises(ValueError, match="broken.yaml"):
        load_template.__wrapped__("broken", tmp_path)
