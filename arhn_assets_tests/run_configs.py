"""Run config shared by the tests that send data through the embedded LLM."""

from __future__ import annotations

from pathlib import Path

import yaml

MAIN_CPU = yaml.safe_load((Path(__file__).parents[1] / "configs" / "main-cpu.yaml").read_text())
# The quality bounds `make run` uses for SmolLM2 (the defaults are a capable judge's).
EMBEDDED_JUDGE_RESOURCES = {"quality_bounds": MAIN_CPU["resources"]["quality_bounds"]}
