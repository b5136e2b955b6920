"""Every shipped run config (`configs/*.yaml`, what `make run` and `make audit` pass to `arhn run`)
is valid for the job it is written for: a setting renamed or moved in the code fails here, not in
a user's first `make run`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from arhn_assets.cli import pipeline_job
from arhn_assets.definitions import defs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The selection each config is run with (the Makefile's `run` and `audit` targets).
SELECTIONS = {"main-cpu.yaml": None}
AUDIT_SELECTION = "group:audit+"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_run_config_is_valid_for_its_job(name):
    run_config = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    job = pipeline_job(defs(), SELECTIONS.get(name, AUDIT_SELECTION))
    result = dg.validate_run_config(job, run_config)
    assert result, f"configs/{name} is not a valid run config"


def test_an_unknown_setting_is_refused():
    job = pipeline_job(defs())
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_queries"):
        dg.validate_run_config(job, {"resources": {"language_model": {"config": {"max_queries": 24}}}})
