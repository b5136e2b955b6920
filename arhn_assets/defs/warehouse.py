"""The warehouse: the dbt project in `dbt/`, as Dagster assets downstream of the lake tables.

dbt is the only writer of `$ARHN_HOME/warehouse.duckdb`, and it never writes the file readers
have open: each build goes to a new file beside it, which then replaces `warehouse.duckdb` by an
atomic rename. A DuckDB shell, the UI or a notebook holding the old file keeps reading the old
version; the next connection sees the new one. (DuckDB allows one writing process per file, so
building in place would fail whenever anybody had the warehouse open.)

The manifest is built at set-up (`make setup` runs `dbt parse`), never at import: code locations
loading at the same time would otherwise race to write it.
"""

import contextlib
import io
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from arhn_assets.defs.partitions import dataset_partitions
from arhn_assets.defs.resources import ArhnStorage

DBT_PROJECT_DIR = Path(os.environ.get("ARHN_DBT_PROJECT_DIR") or Path(__file__).resolve().parents[2] / "dbt")
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"{dbt_project.manifest_path} is missing: build it with `make setup`, or "
        f"`dbt parse --project-dir {DBT_PROJECT_DIR} --profiles-dir {DBT_PROJECT_DIR}`"
    )


class LakeTranslator(DagsterDbtTranslator):
    """The dbt sources are the Python assets' lake tables: same keys, so the graph joins up."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(dbt_resource_props["name"])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """dbt reads its paths from the environment (profiles.yml, sources.yml); set them for one
    invocation and put the old values back."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dbt_assets(
    manifest=dbt_project.manifest_path,
    dagster_dbt_translator=LakeTranslator(),
    # Every dataset's lake data is in every model; a partition's materialization is the rebuild
    # that follows its lake tables. One build at a time (the pool's limit is 1).
    partitions_def=dataset_partitions,
    pool="warehouse",
)
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, storage: ArhnStorage):
    home = storage.paths.home
    home.mkdir(parents=True, exist_ok=True)
    building = home / f".warehouse.{context.run_id}.duckdb"
    final = home / "warehouse.duckdb"
    if final.exists():
        # A build of some models only must keep the others: start from the current warehouse.
        shutil.copyfile(final, building)
    try:
        with _environment(ARHN_HOME=str(home), ARHN_WAREHOUSE_PATH=str(building)):
            # A failing dbt test is a failed asset check, shown on its model; only a model that
            # does not build fails the step (and leaves the current warehouse in place).
            invocation = dbt.cli(["build"], context=context, raise_on_error=False)
            with contextlib.redirect_stdout(_DebugLog(context.log)):
                yield from invocation.stream()
        broken = [
            f"{result['unique_id']}: {result.get('message') or result['status']}"
            for result in invocation.get_artifact("run_results.json")["results"]
            if result["status"] == "error" and not result["unique_id"].startswith("test.")
        ]
        if broken:
            raise dg.Failure(description="dbt could not build:\n" + "\n".join(broken))
        os.replace(building, final)
    finally:
        for leftover in (building, building.with_name(building.name + ".wal")):
            leftover.unlink(missing_ok=True)


class _DebugLog(io.TextIOBase):
    """dagster-dbt echoes every dbt event to stdout; this sends each line to the run's DEBUG log
    instead, so it shows in the UI and in `arhn run --verbose` but not in the compact output
    (whose summary carries the build's result and each failed dbt test as a failed check)."""

    def __init__(self, log):
        self.log = log

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.log.debug(line)
        return len(text)


def _dbt_executable() -> str:
    """dbt from the environment arhn runs in (the venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


@dg.definitions
def warehouse() -> dg.Definitions:
    return dg.Definitions(
        assets=[warehouse_models],
        resources={
            "dbt": DbtCliResource(
                project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=_dbt_executable()
            )
        },
    )
