from pathlib import Path

import dagster as dg

from arhn_assets import pool_slots

# Before any run of this code location claims a slot of the `gpu` pool (pool_slots.py says why).
pool_slots.install()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
