"""The contract of every table the pipeline writes: its columns and types (declared once, in the
stage module that writes it), what it holds, and how its asset checks treat it.

The asset checks hold each partition to these schemas (defs/checks.py), and the dbt sources that
read the lake declare the same columns (a test names any column where dbt/models/staging/
sources.yml and a contract differ). Each stage's settings are its module's dataclass, from which
the Dagster run config is built (arhn_assets/dagster_config.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from arhn_assets.core.audit.scoring import AUDIT_SCHEMA, SCORES_SCHEMA
from arhn_assets.core.evaluation import BEIR_QUERY_SCORES_SCHEMA, BEIR_SCORES_SCHEMA
from arhn_assets.core.ingest import QUARANTINE_SCHEMA, TRIPLETS_SCHEMA
from arhn_assets.core.mining import CANDIDATES_SCHEMA
from arhn_assets.core.rankings import RANKINGS_SCHEMA
from arhn_assets.core.refine import DECISIONS_SCHEMA, REFINED_SCHEMA, SUMMARY_SCHEMA
from arhn_assets.core.report import REPORT_SCHEMA
from arhn_assets.core.snippets import SNIPPETS_SCHEMA
from arhn_assets.core.training import TRAINED_SCHEMA
from arhn_assets.core.triplet_formats import PASSAGES_SCHEMA


@dataclass(frozen=True)
class TableContract:
    asset: str
    schema: Mapping[str, pl.DataType]
    description: str
    must_have_rows: bool = True  # an empty partition fails its `not_empty` check
    blocking: bool = True  # a failed check stops the steps after it


TABLES: tuple[TableContract, ...] = (
    TableContract(
        "raw_triplets", TRIPLETS_SCHEMA, "One row per training query: its positives and any provided negatives."
    ),
    TableContract("raw_passages", PASSAGES_SCHEMA, "Every passage: the BEIR corpus plus passages met in landed files."),
    TableContract(
        "raw_triplets_quarantine",
        QUARANTINE_SCHEMA,
        "Rejected input rows with file, line, field and reason.",
        must_have_rows=False,
        blocking=False,
    ),  # empty is the good case
    TableContract("mined_negatives", CANDIDATES_SCHEMA, "The scored candidates per query, positives included."),
    TableContract(
        "answer_snippets", SNIPPETS_SCHEMA, "Per (query, candidate): the LLM's verbatim answer span or NO_ANSWER."
    ),
    TableContract(
        "answerability_rankings", RANKINGS_SCHEMA, "Per query: the candidates ranked by how directly they answer it."
    ),
    TableContract(
        "relabel_decisions", DECISIONS_SCHEMA, "Per configuration, query and candidate: the decision and its evidence."
    ),
    TableContract(
        "refine_summary",
        SUMMARY_SCHEMA,
        "Per configuration: queries kept, negatives relabeled and filtered, and rates.",
    ),
    TableContract("refined_triplets", REFINED_SCHEMA, "The training set per configuration and kept query."),
    TableContract("trained_retriever", TRAINED_SCHEMA, "One fine-tuned model per configuration."),
    TableContract("beir_scores", BEIR_SCORES_SCHEMA, "BEIR metrics per model and evaluation dataset.", blocking=False),
    TableContract(
        "beir_query_scores", BEIR_QUERY_SCORES_SCHEMA, "BEIR metrics per model and test query.", blocking=False
    ),
    TableContract(
        "retrieval_report",
        REPORT_SCHEMA,
        "Per configuration and metric: the delta against the baseline and paired tests.",
        blocking=False,
    ),
    TableContract(
        "judge_audit",
        AUDIT_SCHEMA,
        "Per configuration and judged negative: the judge's flag and the truth's label.",
        blocking=False,
    ),
    TableContract(
        "judge_audit_scores",
        SCORES_SCHEMA,
        "Per configuration and mining-rank bucket: the judge's precision, recall, F1 and kappa.",
        blocking=False,
    ),
)
CONTRACTS: dict[str, TableContract] = {table.asset: table for table in TABLES}


DUCKDB_TYPES = {pl.String: "varchar", pl.Int64: "bigint", pl.Float64: "double", pl.Boolean: "boolean"}
# Every dataset partition of a lake table, its columns read by name.
EXTERNAL_LOCATION = (
    "read_parquet('{{ env_var('ARHN_HOME', 'data') }}/lake/{name}/*/*.parquet', "
    "hive_partitioning = true, union_by_name = true)"
)
SOURCES_HEADER = """\
version: 2

# Generated from arhn_assets/core/contracts.py by `make dbt-sources`: edit the contracts, not this file.
# The Parquet lake written by the Dagster assets: $ARHN_HOME/lake/<asset>/dataset=<name>/part-0.parquet.
# Every table is read across all its dataset partitions at once. union_by_name tolerates columns
# added to an asset later (older partitions read null). The declared columns are the contracts'
# schemas: a staging model reads them as an empty relation while its lake table has no file yet
# (macros/lake.sql), so `dbt build` works on a lake that is only partly materialized. Each source
# table has the key of the Dagster asset that writes it (arhn_assets/defs/warehouse.py).

sources:
  - name: lake
    description: The Parquet lake written by the Dagster assets, one file per asset and dataset.
    config:
      meta:
        external_location: "{external_location}"
    tables:
"""


def duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List):
        return duckdb_type(dtype.inner) + "[]"
    return DUCKDB_TYPES[dtype.base_type()]


def dbt_sources_yaml() -> str:
    """dbt/models/staging/sources.yml: every contract as a source table of the lake."""
    lines = [SOURCES_HEADER.replace("{external_location}", EXTERNAL_LOCATION).rstrip("\n")]
    for table in TABLES:
        lines += [
            f"      - name: {table.asset}",
            f"        description: {json.dumps(table.description)}",
            "        columns:",
        ]
        for name, dtype in table.schema.items():
            kind = duckdb_type(dtype)
            lines.append(f"          - {{name: {name}, data_type: {json.dumps(kind) if '[' in kind else kind}}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(dbt_sources_yaml(), end="")
