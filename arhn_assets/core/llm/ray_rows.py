"""The rows of `RayDataBackend`'s Ray Data jobs, and the Parquet shards their workers write.

A request becomes a row (its call key, chat messages, decoding settings); every processor turns
it into a result row of `RESULT_SCHEMA` (a completion, or the reason it failed). As each batch
finishes, the worker writes its successful rows as one Parquet shard under
`<root>/<model identity hash>/` (a temporary name, then a rename: a shard is whole or absent).
Before a job, the driver reads the shards and sends only the requests that have none, so a job or
a worker killed midway repeats no call whose result was written. Within a job, a batch that Ray
retries after its worker wrote the shard and died is answered from that shard, not called or
written again. Failed rows are never written.

Plain pyarrow and polars: imported by the driver and by the Ray workers alike, without Ray.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from arhn_assets.core.llm.base import Completion, GenerationRequest
from arhn_assets.core.llm.cache import call_key
from arhn_assets.core.llm.constraints import OutputConstraint

RESULT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("text", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_seconds", pa.float64()),
        ("finish_reason", pa.string()),
        ("logprob_tokens", pa.list_(pa.string())),  # the first token's alternatives (null: none asked)
        ("logprob_values", pa.list_(pa.float64())),
        ("error", pa.string()),  # null on success; failed rows are returned, never written to a shard
    ]
)
# Shards are merged into one file when a folder holds more than this many.
COMPACT_AFTER_FILES = 256


def request_key(identity: str, request: GenerationRequest) -> str:
    """A call's key without the prompt template's name: a completion depends only on the model, the
    messages and the decoding settings, which is what a backend sees."""
    return call_key(identity, "", 0, request)


def shard_dir(root: Path, identity: str) -> Path:
    """Where the shards of one model live: `<root>/<sha256 of its identity, 16 hex digits>/`."""
    return root / hashlib.sha256(identity.encode()).hexdigest()[:16]


def request_row(key: str, request: GenerationRequest) -> dict:
    constraint = request.constraint
    return {
        "key": key,
        "messages": request.as_chat(),
        "max_tokens": request.max_new_tokens,
        "constraint_kind": constraint.kind if constraint else None,
        "constraint_size": constraint.size if constraint else None,
        "top_logprobs": request.top_logprobs,
    }


def request_from_row(row: dict) -> GenerationRequest:
    kind, size = row.get("constraint_kind"), row.get("constraint_size")
    return GenerationRequest(
        messages=tuple((m["role"], m["content"]) for m in plain(row["messages"])),
        max_new_tokens=int(row["max_tokens"]),
        constraint=OutputConstraint(kind, int(size)) if kind else None,
        top_logprobs=int(row.get("top_logprobs") or 0),
    )


def result_row(key: str, completion: Completion) -> dict:
    logprobs = completion.first_token_logprobs
    return {
        "key": key,
        "text": completion.text,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_seconds": completion.latency_seconds,
        "finish_reason": completion.finish_reason,
        "logprob_tokens": None if logprobs is None else [token for token, _ in logprobs],
        "logprob_values": None if logprobs is None else [value for _, value in logprobs],
        "error": completion.error,
    }


def failed_row(key: str, reason: str) -> dict:
    return result_row(key, Completion("", 0, 0, 0.0, "stop", error=reason or "unknown error"))


def completion_from_row(row: dict, cached: bool = False) -> Completion:
    tokens, values = row.get("logprob_tokens"), row.get("logprob_values")
    return Completion(
        text=row["text"] or "",
        prompt_tokens=int(row["prompt_tokens"] or 0),
        completion_tokens=int(row["completion_tokens"] or 0),
        latency_seconds=float(row["latency_seconds"] or 0.0),
        finish_reason=row["finish_reason"] or "stop",
        cached=cached,
        first_token_logprobs=None if tokens is None else tuple(zip(list(tokens), map(float, values))),
        error=row.get("error"),
    )


def result_table(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=RESULT_SCHEMA)


def plain(value):
    """`value` with numpy arrays and scalars (what Ray Data hands back for nested columns) turned
    into lists and Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def write_shard(folder: Path, rows: Iterable[dict]) -> Path | None:
    """The successful `rows` as one new shard in `folder` (temporary name, then rename); None if
    there were none."""
    kept = [row for row in rows if row.get("error") is None]
    if not kept:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{os.getpid()}-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(result_table(kept), tmp)
    os.replace(tmp, folder / name)
    return folder / name


def write_shard_batch(batch: pa.Table, folder: str) -> pa.Table:
    """A Ray Data batch function: write `batch`'s successful rows as a shard, pass it on. Rows
    already written (a batch Ray retried after writing it) are not written again."""
    rows = batch.to_pylist()
    written = written_keys(Path(folder), {row["key"] for row in rows})
    write_shard(Path(folder), [row for row in rows if row["key"] not in written])
    return batch


def _read_once(folder: Path, keys: set[str] | None) -> pl.DataFrame:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return pl.DataFrame(schema=pl.from_arrow(RESULT_SCHEMA.empty_table()).schema)
    scan = pl.scan_parquet(files)
    if keys is not None:
        scan = scan.filter(pl.col("key").is_in(list(keys)))
    return scan.collect()


def written_keys(folder: Path, keys: set[str]) -> set[str]:
    """Which of `keys` have a row under `folder`."""
    return set(_read(folder, keys)["key"].to_list())


def _read(folder: Path, keys: set[str] | None) -> pl.DataFrame:
    try:
        return _read_once(folder, keys)
    except FileNotFoundError:  # a shard merged away while it was read: read the merged file
        return _read_once(folder, keys)


def read_shards(folder: Path, keys: set[str] | None = None) -> dict[str, Completion]:
    """Completions written under `folder` (of `keys` only, when given), marked `cached`."""
    frame = _read(folder, keys)
    return {row["key"]: completion_from_row(row, cached=True) for row in frame.unique("key").iter_rows(named=True)}


def compact_shards(folder: Path, after_files: int = COMPACT_AFTER_FILES) -> int:
    """Merge the shards of `folder` into one when it holds more than `after_files`: the merged
    file is written first, then the merged shards are removed, so no row is ever absent. Returns
    how many files were merged (0: none)."""
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if len(files) <= after_files:
        return 0
    frame = pl.scan_parquet(files).collect().unique("key", keep="first")
    name = f"compact-{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(frame.to_arrow().cast(RESULT_SCHEMA), tmp)
    os.replace(tmp, folder / name)
    for file in files:
        file.unlink(missing_ok=True)
    return len(files)
