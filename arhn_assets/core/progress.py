"""Progress people can watch: tqdm counts, times and estimates; each refresh becomes one log line.

tqdm does the bookkeeping (done/total, rate, ETA, at most one refresh per `every` seconds); the
sink here turns its refreshed bar into a plain line for a log (the Dagster run log, which the UI
shows and `arhn run` prints), instead of a carriage-return bar that only a terminal can draw.
"""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

Log = Callable[[str], None]
EVERY_SECONDS = 10.0
BAR = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), {rate_noinv_fmt}, elapsed {elapsed}, ETA {remaining}{postfix}"


class LogLines:
    """A file-like sink for tqdm: every non-empty write is one log line."""

    def __init__(self, log: Log):
        self.log = log

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            self.log(line)

    def flush(self) -> None:
        pass


def progress(label: str, total: int, log: Log | None, unit: str, every: float = EVERY_SECONDS) -> tqdm:
    """A tqdm counter of `total` `unit` (plural, e.g. "passages") logging `label: done/total
    (percent), rate, elapsed, ETA` to `log` at most every `every` seconds and once more when
    closed; silent when `log` is None."""
    return tqdm(
        total=total,
        desc=label,
        unit=f" {unit}",
        file=LogLines(log) if log else None,
        disable=log is None,
        mininterval=every,
        maxinterval=every,
        ascii=True,
        dynamic_ncols=False,
        bar_format=BAR,
    )
