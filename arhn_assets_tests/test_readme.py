"""The README's run-config block shows every setting with its default: it is checked against the
settings dataclasses the run config is built from, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from arhn_assets.core.checks import QualityBounds
from arhn_assets.core.embeddings import EncoderSpec
from arhn_assets.core.evaluation import EvaluationConfig
from arhn_assets.core.ingest import IngestConfig
from arhn_assets.core.llm.backends import BackendSpec
from arhn_assets.core.mining import MiningConfig
from arhn_assets.core.rankings import RankingConfig
from arhn_assets.core.refine import RefineConfig
from arhn_assets.core.sampling import QuerySample
from arhn_assets.core.snippets import SnippetConfig
from arhn_assets.core.training import TrainingConfig

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS = {
    ("ops", "ingest_dataset"): IngestConfig,
    ("ops", "mined_negatives"): MiningConfig,
    ("ops", "answer_snippets"): SnippetConfig,
    ("ops", "answerability_rankings"): RankingConfig,
    ("ops", "relabel_decisions"): RefineConfig,
    ("ops", "trained_retriever"): TrainingConfig,
    ("ops", "beir_scores"): EvaluationConfig,
    ("resources", "query_sample"): QuerySample,
    ("resources", "embedding_model"): EncoderSpec,
    ("resources", "quality_bounds"): QualityBounds,
}


def run_config_block() -> dict:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"`run\.yaml`.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no ```yaml block after `run.yaml`"
    return yaml.safe_load(match.group(1))


def defaults(kind: type) -> dict:
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(kind)}


@pytest.mark.parametrize(("place", "kind"), SETTINGS.items(), ids=[name for _, name in SETTINGS])
def test_the_readme_shows_every_setting_with_its_default(place, kind):
    shown = run_config_block()[place[0]][place[1]]["config"]
    expected = defaults(kind)
    assert sorted(shown) == sorted(expected), f"README run.yaml {place[1]}: keys differ from {kind.__name__}"
    for name, value in expected.items():
        assert shown[name] == value, (
            f"README run.yaml {place[1]}.{name}: shows {shown[name]!r}, the default is {value!r}"
        )


def test_the_language_model_options_shown_are_real_with_their_defaults():
    shown = run_config_block()["resources"]["language_model"]["config"]
    expected = defaults(BackendSpec)
    for name, value in shown.items():
        assert name in expected, f"README run.yaml language_model.{name}: no such option"
        assert value == expected[name], (
            f"README run.yaml language_model.{name}: shows {value!r}, the default is {expected[name]!r}"
        )
