"""`dagster dev` (webserver + daemon) as a subprocess for the browser test.

Started in its own session with SIGINT restored to its default: a process started in the
background of a non-interactive shell inherits SIGINT "ignored", and `dagster dev` would then
ignore the SIGINT it is stopped with. Stopped with SIGINT (about a second), then the whole
process group (webserver, daemon, code servers, run workers) is killed if anything is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDev:
    """One `dagster dev -w workspace.yaml` on 127.0.0.1, its output in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = env
        self._process: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 120.0) -> DagsterDev:
        dagster = Path(sys.executable).with_name("dagster")
        command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", "workspace.yaml"]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_restore_sigint,
            )
        self._wait_ready(ready_timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"dagster dev did not answer {self.url}/server_info within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no dagster dev log)"
        # Drop ANSI colours and a warning repeated once per import of the definitions.
        text = text.replace("\x1b[32m", "").replace("\x1b[34m", "").replace("\x1b[0m", "").replace("\x1b[31m", "")
        kept = [line for line in text.splitlines() if "configured on this project does not match the name" not in line]
        return "\n".join(kept[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGINT, then SIGKILL for the whole process group if anything of it is still alive."""
        process = self._process
        if process is None:
            return
        pgid = process.pid  # start_new_session: the leader's pid is the group id
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
