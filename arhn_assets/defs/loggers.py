"""The loggers every job may select in its run config: Dagster's console logger (the default when
none is selected, as before) and `arhn_console`, the compact console of `arhn run`
(arhn_assets/run_output.py). Declared here so that a run launched with either, from the CLI or
re-executed from the UI, validates against the code location's jobs."""

import dagster as dg

from arhn_assets.run_output import LOGGER_KEY, compact_console


@dg.definitions
def loggers() -> dg.Definitions:
    return dg.Definitions(loggers={"console": dg.colored_console_logger, LOGGER_KEY: compact_console})
