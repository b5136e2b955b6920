"""Task instructions: what relevance means for a dataset (answers a question, gives evidence for or
against a claim, argues against an argument...).

Both LLM prompts carry the dataset's instruction, and so does the encoder's query prompt when it
has an `{instruction}` slot (e.g. `"Instruct: {instruction}\\nQuery: "` for e5-mistral-style
models), as LG-ANNA-Embedding does for its embeddings. An instruction is part of every prompt, so
of every cached call's key: changing it never serves answers given under another.

Ingest stores the instruction with each training query (`raw_triplets.instruction`): the known
BEIR datasets below have defaults, a landed dataset sets its own in the ingest config, and an
empty string means none.
"""

from __future__ import annotations

# Keyed by BEIR dataset name. A partition named `<name>-<anything>` (e.g. `scifact-qwen`,
# `fiqa-rlhn`) takes the instruction of `<name>`.
KNOWN_INSTRUCTIONS: dict[str, str] = {
    "scifact": "The query is a scientific claim. A passage answers it when it reports evidence that "
    "supports or refutes the claim.",
    "fiqa": "The query is a financial question. A passage answers it when it gives the information or "
    "advice asked for.",
    "nfcorpus": "The query is a health or nutrition topic. A passage answers it when it reports findings "
    "on that topic.",
    "arguana": "The query is an argument. A passage answers it when it argues against that argument.",
    "scidocs": "The query is the title of a scientific paper. A passage answers it when it is the "
    "abstract of a paper that paper would cite.",
    "trec-covid": "The query is a question about COVID-19. A passage answers it when it reports evidence "
    "on that question.",
    "quora": "The query is a question. A passage answers it when it asks the same question.",
    "climate-fever": "The query is a claim about climate change. A passage answers it when it gives "
    "evidence that supports or refutes the claim.",
    "fever": "The query is a claim. A passage answers it when it gives evidence that supports or refutes the claim.",
    "hotpotqa": "The query is a multi-hop question. A passage answers it when it gives a fact needed for the answer.",
    "touche2020": "The query is a debate question. A passage answers it when it argues for or against it.",
}


def default_instruction(dataset: str) -> str:
    """The known instruction of `dataset` (or of the BEIR name its partition starts with), else ''."""
    name = dataset.lower()
    if name in KNOWN_INSTRUCTIONS:
        return KNOWN_INSTRUCTIONS[name]
    return KNOWN_INSTRUCTIONS.get(name.split("-", 1)[0], "")


def resolve_instruction(dataset: str, configured: str | None) -> str:
    """`configured` when given ('' = no instruction), else the dataset's default."""
    return default_instruction(dataset) if configured is None else configured.strip()


def with_instruction(prompt: str | None, instruction: str) -> str | None:
    """An encoder prompt with its `{instruction}` slot filled (prompts without one are kept)."""
    if prompt is None or "{instruction}" not in prompt:
        return prompt
    return prompt.replace("{instruction}", instruction)
