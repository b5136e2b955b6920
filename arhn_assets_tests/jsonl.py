"""Writing JSONL test inputs, including the broken kinds (raw bytes, bad UTF-8, CRLF)."""

from __future__ import annotations

import json


def jsonl_bytes(lines: list, newline: bytes = b"\n") -> bytes:
    """dicts/lists become JSON, str is written as is, bytes are written raw (for bad bytes)."""
    out = []
    for line in lines:
        if isinstance(line, bytes):
            out.append(line)
        elif isinstance(line, str):
            out.append(line.encode("utf-8"))
        else:
            out.append(json.dumps(line).encode("utf-8"))
    return b"".join(line + newline for line in out)
