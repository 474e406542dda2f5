"""The launch/ready/stop cycle shared by the local Prometheus and Alertmanager (monitoring test).

Both are Prometheus-project daemons: started on a free loopback port with their output in a log
file of their work directory, ready once `GET /-/ready` answers 200, stopped with SIGTERM and, if
that is not enough within 10 s, SIGKILL. A daemon that exits while starting fails at once with
the tail of its log instead of after the whole timeout.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from services.devstack.procs import free_port, wait_for


class LocalDaemon:
    """Subclasses set `name` (log file and messages) and `error` (the exception they raise)."""

    name = "daemon"
    error: type[RuntimeError] = RuntimeError

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _launch(self, command: Callable[[int], list[str]], timeout_s: float) -> None:
        """Start `command(port)` on a free port and wait until it is ready."""
        self.port = free_port()
        with (self.workdir / f"{self.name}.log").open("ab") as log:  # the child keeps its copy
            self._proc = subprocess.Popen(
                command(self.port), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not wait_for(self._ready, timeout_s, interval_s=0.2):
            self.stop()
            raise self.error(f"{self.name} did not get ready in {timeout_s:.0f}s: "
                             f"{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise self.error(f"{self.name} exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                        timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
