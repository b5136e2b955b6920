"""A real llama.cpp server on 127.0.0.1 for the `openai` backend's tests: `arhn llm-server`
(xllamacpp, prebuilt: no compile) serving SmolLM2-135M, started as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

API_KEY = "arhn-test-key"
MODEL = "smollm2"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "arhn_assets.cli",
        "llm-server",
        "--model",
        "smollm2-135m",
        "--alias",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key-env",
        "ARHN_TEST_SERVER_KEY",
        # One slot: answers are then deterministic (llama.cpp's batched kernels round differently).
        # One thread: two stall waiting for each other when the machine's cores are busy.
        "--parallel",
        "1",
        "--threads",
        "1",
        "--context-size",
        "4096",
    ]
    env = {**os.environ, "ARHN_TEST_SERVER_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def wait_until_up(process: subprocess.Popen, base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"arhn llm-server exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}"
            )
        try:
            if httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"arhn llm-server did not answer on {base_url} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
