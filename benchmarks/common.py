"""What every benchmark script shares: where the BEIR data is read from.

The scripts run as `python benchmarks/<name>.py`, so this folder is on `sys.path` and they import
this module as `common`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def default_data_dir() -> Path:
    """$ARHN_DATA_DIR, else ../shared/data beside the checkout (the README's layout)."""
    return Path(os.environ.get("ARHN_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=default_data_dir(), help="folder holding the BEIR datasets (scifact/, ...)"
    )
