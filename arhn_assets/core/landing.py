"""What changed in `$ARHN_HOME/landing/` since the last look: the logic of the landing sensor.

Layout: one folder per dataset (`landing/<dataset>/`), holding mined-negative files
(`*.jsonl`, `*.jsonl.gz`, `*.parquet`, the formats ingest reads) and `datasets.Dataset.save_to_disk`
folders. A folder is one landed item: its signature is its newest modification time (of the folder
or any file in it) and the total size of its files, and it is readable when it is a dataset
(`st_formats.dataset_folder_problem`); any other folder is reported unreadable, as ingest would
quarantine it and fail.

A file is picked up only once it is complete. Two rules, so that neither a careful nor a
careless writer triggers a run on half a file:
- write-then-rename: names starting with '.' are in-flight writes and never read (write
  `.part.jsonl`, then rename it to `part.jsonl`; a rename within a folder is atomic);
- settle time: a file modified less than `settle_seconds` ago is still being written (a plain
  `cp` or a slow upload) and waits for a later look.

A file counts as new or changed by its (mtime, size) signature, kept in the cursor. A complete
file that cannot be read (a corrupt gzip or Parquet file, not JSON, no permission) is reported
once per signature and skipped; its dataset waits until it is fixed or removed, because ingest
would fail on it. A file whose name arhn refuses (`paths.validate_file_name`: quotes, spaces,
non-ASCII) is reported the same way without being opened. Other datasets go on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISREG

import pyarrow.parquet as pq

from arhn_assets.core.paths import InvalidDatasetKey, InvalidFileName, validate_dataset_key, validate_file_name
from arhn_assets.core.st_formats import dataset_folder_problem
from arhn_assets.core.triplet_formats import is_landed_file

GZIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    dataset: str
    name: str
    mtime_ns: int
    size: int

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"

    @property
    def signature(self) -> str:
        return f"{self.mtime_ns}:{self.size}"


@dataclass
class LandingScan:
    """One look at the landing folder; `cursor` is what the next look compares against."""

    datasets: list[str] = field(default_factory=list)  # every valid dataset folder, new or not
    changed: dict[str, list[LandedFile]] = field(default_factory=dict)  # per dataset to refresh
    run_keys: dict[str, str] = field(default_factory=dict)  # per dataset to refresh
    settling: list[LandedFile] = field(default_factory=list)
    newly_unreadable: list[tuple[LandedFile, str]] = field(default_factory=list)
    blocked: dict[str, list[str]] = field(default_factory=dict)  # dataset -> its unreadable files
    invalid_folders: list[str] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)


def probe_landed_file(path: Path) -> str | None:
    """Why `path` cannot be ingested, or None if it reads. Cheap except for gzip, which is read
    to the end because a truncated gzip file only shows at its end (CRC and length trailer)."""
    if path.is_dir():
        return dataset_folder_problem(path)
    try:
        if path.name.endswith(".parquet"):
            pq.read_metadata(path)
            return None
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            first = b""
            for line in stream:
                if line.strip():
                    first = line
                    break
            if path.name.endswith(".gz"):
                while stream.read(GZIP_CHUNK):
                    pass
        if not first:
            return "empty file: no JSON line"
        if not isinstance(json.loads(first), dict):
            return "the first line is not a JSON object"
        return None
    except (OSError, EOFError, zlib.error) as error:  # permissions, corrupt gzip, I/O errors
        return f"{type(error).__name__}: {error}"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"the first line is not JSON: {error}"
    except Exception as error:  # pyarrow raises ArrowInvalid and others for a bad Parquet file
        return f"unreadable Parquet: {type(error).__name__}: {error}"


def _dataset_run_key(dataset: str, files: list[LandedFile]) -> str:
    """Same files, same signatures: same key, so a repeated request is dropped by Dagster."""
    digest = hashlib.sha256("\n".join(sorted(f"{f.name}\t{f.signature}" for f in files)).encode()).hexdigest()[:16]
    return f"landing:{dataset}:{digest}"


@dataclass
class _Memory:
    """The cursor's maps as this look updates them, and the files it found."""

    seen: dict[str, str]  # file key -> signature already run
    reported: dict[str, str]  # file key -> signature (or "refused-name") already reported unreadable
    # Read fine but not yet run (their dataset waits on another file): not probed again.
    readable: dict[str, str]
    present: set[str] = field(default_factory=set)
    complete: dict[str, list[LandedFile]] = field(default_factory=dict)  # per dataset, readable files

    @classmethod
    def from_cursor(cls, cursor: dict | None) -> _Memory:
        cursor = cursor or {}
        return cls(
            seen=dict(cursor.get("files", {})),
            reported=dict(cursor.get("unreadable", {})),
            readable=dict(cursor.get("readable", {})),
        )

    def to_cursor(self) -> dict:
        # Forget removed files, so one landed again under the same name counts as new.
        return {
            "files": {key: sig for key, sig in self.seen.items() if key in self.present},
            "unreadable": {key: sig for key, sig in self.reported.items() if key in self.present},
            "readable": {key: sig for key, sig in self.readable.items() if key in self.present},
        }


def _dataset_folders(landing_root: Path, scan: LandingScan) -> list[tuple[str, Path]]:
    """The valid dataset folders, also listed in `scan.datasets`; invalid names go to `scan.invalid_folders`."""
    folders = sorted(p for p in landing_root.iterdir() if p.is_dir()) if landing_root.is_dir() else []
    valid: list[tuple[str, Path]] = []
    for folder in folders:
        if folder.name.startswith("."):
            continue
        try:
            dataset = validate_dataset_key(folder.name)
        except InvalidDatasetKey:
            scan.invalid_folders.append(folder.name)
            continue
        scan.datasets.append(dataset)
        valid.append((dataset, folder))
    return valid


def _signature(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a landed file; of a folder, its newest mtime (itself or a file in it, so
    a folder still being written settles like a file) and its files' total size. None: it vanished,
    or is neither a file nor a folder (a FIFO would block the probe)."""
    try:
        stat = path.stat()
    except FileNotFoundError:  # renamed or removed between listing and stat
        return None
    if S_ISREG(stat.st_mode):
        return stat.st_mtime_ns, stat.st_size
    if not S_ISDIR(stat.st_mode):
        return None
    try:
        entries = [entry.stat() for entry in path.iterdir()]
    except FileNotFoundError:  # the folder or a file in it went away mid-look: look again next tick
        return None
    except PermissionError:  # an unlistable folder: the probe names it
        entries = []
    return max([stat.st_mtime_ns, *(e.st_mtime_ns for e in entries)]), sum(e.st_size for e in entries)


def _refuse_name(dataset: str, path: Path, refused: InvalidFileName, scan: LandingScan, memory: _Memory) -> None:
    # Never opened (nor stat'ed): the dataset waits until the file is renamed or removed.
    unnamed = LandedFile(dataset, path.name, 0, 0)
    scan.blocked.setdefault(dataset, []).append(str(refused))
    memory.present.add(unnamed.key)
    if memory.reported.get(unnamed.key) != "refused-name":
        scan.newly_unreadable.append((unnamed, str(refused)))
        memory.reported[unnamed.key] = "refused-name"


def _check_file(
    dataset: str, path: Path, now: float, settle_seconds: float, scan: LandingScan, memory: _Memory
) -> None:
    """Sort one landed file (or folder) into settling, blocked, already run, or changed."""
    try:
        validate_file_name(path.name)
    except InvalidFileName as refused:
        _refuse_name(dataset, path, refused, scan, memory)
        return
    signature = _signature(path)
    if signature is None:
        return
    landed = LandedFile(dataset, path.name, *signature)
    memory.present.add(landed.key)
    if now - landed.mtime_ns / 1e9 < settle_seconds:
        scan.settling.append(landed)
        return
    if memory.seen.get(landed.key) == landed.signature:
        memory.complete.setdefault(dataset, []).append(landed)
        return
    problem = None if memory.readable.get(landed.key) == landed.signature else probe_landed_file(path)
    if problem is not None:
        scan.blocked.setdefault(dataset, []).append(f"{path}: {problem}")
        if memory.reported.get(landed.key) != landed.signature:
            scan.newly_unreadable.append((landed, problem))
            memory.reported[landed.key] = landed.signature
        return
    memory.reported.pop(landed.key, None)
    memory.readable[landed.key] = landed.signature
    memory.complete.setdefault(dataset, []).append(landed)
    scan.changed.setdefault(dataset, []).append(landed)


def _settle_changes(scan: LandingScan, memory: _Memory) -> None:
    """Keep the changed datasets that may run now, give each a run key, and mark their files as run."""
    settling_datasets = {f.dataset for f in scan.settling}
    for dataset in list(scan.changed):
        # Wait while the dataset still has a file being written or one that cannot be read: the
        # run would ingest half a file, or fail on the broken one.
        if dataset in settling_datasets or dataset in scan.blocked:
            del scan.changed[dataset]
            continue
        scan.run_keys[dataset] = _dataset_run_key(dataset, memory.complete[dataset])
    for files in scan.changed.values():
        for landed in files:
            memory.seen[landed.key] = landed.signature
            memory.readable.pop(landed.key)


def scan_landing(landing_root: Path, cursor: dict | None, now: float, settle_seconds: float = 30.0) -> LandingScan:
    """Compare the landing folder with `cursor` (the previous scan's, or None the first time)."""
    memory = _Memory.from_cursor(cursor)
    scan = LandingScan()
    for dataset, folder in _dataset_folders(landing_root, scan):
        for path in sorted(folder.iterdir()):
            if is_landed_file(path):
                _check_file(dataset, path, now, settle_seconds, scan, memory)
    _settle_changes(scan, memory)
    scan.cursor = memory.to_cursor()
    return scan
