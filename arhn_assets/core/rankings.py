"""Stage 2, rankings: listwise answerability ranking of each query's candidates with sliding windows.

RankGPT / rank_llm conventions: windows of `window_size` passages moved from the end of the list
to its start by `step`, each window re-ordered by the judge, so the best `step` passages bubble
to the top. The window loop is rank_llm's (the last window may be smaller than `window_size`, and
no window is a repeat of the previous one), which fixes RankGPT's skipped head for list lengths
that are not `window_size + k * step`.

Candidate order is shuffled per query with a fixed seed before ranking: listwise LLM rankers
favour early positions, and the mined order would put the positive first.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from arhn_assets.core.parsing import RankingParse, RankingStatus

STATUS_SEVERITY: dict[str, int] = {"ok": 0, "missing_documents": 1, "repetition": 2, "wrong_format": 3}


def window_bounds(n: int, window_size: int = 20, step: int = 10) -> list[tuple[int, int]]:
    """(start, end) of each window, in the order they are ranked (from the end of the list)."""
    if window_size < 1 or step < 1:
        raise ValueError(f"window_size and step must be positive, got {window_size} and {step}")
    bounds = []
    # A list shorter than the window is one window; unclamped, start + step could be 0 at once.
    window_size = min(window_size, n)
    end, start = n, n - window_size
    while end > 0 and start + step != 0:
        start = max(start, 0)
        bounds.append((start, end))
        end, start = end - step, start - step
    return bounds


def shuffled(query_id: str, doc_ids: Sequence[str], seed: int) -> list[str]:
    """A per-query shuffle that does not depend on the order queries are processed in."""
    key = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    order = list(doc_ids)
    random.Random(int.from_bytes(key[:8], "big")).shuffle(order)
    return order


@dataclass(frozen=True)
class WindowRequest:
    query_id: str
    doc_ids: list[str]  # the window's passages in the order the judge sees them


@dataclass
class RankingResult:
    query_id: str
    ranking: list[str]  # doc ids, best first
    status: RankingStatus = "ok"  # the worst status of any window
    windows: int = 0
    window_statuses: list[str] = field(default_factory=list)


Judge = Callable[[list[WindowRequest]], list[RankingParse]]


def rank_with_sliding_windows(
    candidates: dict[str, list[str]], judge: Judge, window_size: int = 20, step: int = 10
) -> dict[str, RankingResult]:
    """Rank every query's candidates, calling `judge` once per window pass with one request per
    query that still has a window at that pass, so a backend can batch across queries."""
    results = {qid: RankingResult(qid, list(docs)) for qid, docs in candidates.items()}
    plans = {qid: window_bounds(len(docs), window_size, step) for qid, docs in candidates.items()}
    for index in range(max((len(p) for p in plans.values()), default=0)):
        active = [qid for qid, plan in plans.items() if index < len(plan)]
        requests = [WindowRequest(qid, results[qid].ranking[slice(*plans[qid][index])]) for qid in active]
        parses = judge(requests)
        if len(parses) != len(requests):
            raise RuntimeError(f"the judge answered {len(parses)} of {len(requests)} window requests")
        for qid, request, parse in zip(active, requests, parses):
            result = results[qid]
            start, end = plans[qid][index]
            result.ranking[start:end] = [request.doc_ids[p] for p in parse.order]
            result.windows += 1
            result.window_statuses.append(parse.status)
            if STATUS_SEVERITY[parse.status] > STATUS_SEVERITY[result.status]:
                result.status = parse.status
    return results
