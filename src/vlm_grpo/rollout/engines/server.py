"""An engine's server process: started in its own process group with a log, waited on until healthy,
stopped with its whole group, and, when it ends, named by how it ended (the signal that killed it, or
its exit code and its log's last error line). Any engine that runs a server of its own uses these."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .base import EngineError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The server's process, in a session of its own (so stopping it stops everything it started), its
    output appended to `log`."""
    with open(log, "ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_healthy(
    url: str, process: subprocess.Popen | None, timeout: float, log: Path | None, name: str = "the vLLM engine"
) -> None:
    """Until `url`/health answers 200; a process that exits first, or a server still silent at `timeout`,
    raises EngineError naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EngineError(f"{name} {exit_cause(process.returncode, log)} at start-up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            time.sleep(1.0)
    raise EngineError(f"{name} at {url} was not healthy within {timeout:g} s (log: {log or 'not ours'})")


def stop_server(url: str, process: subprocess.Popen | None) -> None:
    """Ask the server to stop, then end its process group (only a server this engine started)."""
    if process is None or process.poll() is not None:
        return
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/shutdown", data=b"{}"), timeout=5).read()
        process.wait(timeout=10)
    except Exception:  # not answering, or slow to go: the group is stopped below
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def exit_cause(code: int, log: Path | None) -> str:
    """How the server's process ended: the signal that killed it (whatever its log said last, which is
    then not the cause), or its exit code and the log's last error line."""
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory, or stopped from outside)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code} ({last_line(log)})"


def last_line(log: Path | None) -> str:
    if log is None or not log.is_file():
        return "(no log)"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    raised = [line for line in lines if re.search(r"\w(Error|Exception)\b:", line)]  # an exception's own line
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (raised or errors or lines or ["(empty log)"])[-1].strip()[-300:]
