"""A real Alertmanager on loopback delivering every alert to one webhook: for the monitoring test.

Debian's `prometheus-alertmanager` package (scripts/setup-debian.sh) provides the binary. The
configuration routes everything to the given webhook URL with one-second grouping, so a firing
alert arrives within seconds; clustering is off (no gossip port), data lives in a throw-away
directory. Prometheus is pointed at it with LocalPrometheus(alertmanagers=[am.address]).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from services.devstack.procs import free_port, wait_for

__all__ = ["AlertmanagerError", "LocalAlertmanager"]

#: Debian names the binary after the package; upstream tarballs call it `alertmanager`.
BINARIES = ("prometheus-alertmanager", "alertmanager")


class AlertmanagerError(RuntimeError):
    """Alertmanager is missing or did not start."""


class LocalAlertmanager:
    def __init__(self, workdir: Path, webhook_url: str) -> None:
        self.workdir = workdir
        self.webhook_url = webhook_url
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port, as Prometheus' alerting configuration takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalAlertmanager:
        binary = next((path for name in BINARIES if (path := shutil.which(name))), None)
        if binary is None:
            raise AlertmanagerError(
                "prometheus-alertmanager is not installed (scripts/setup-debian.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "route": {"receiver": "test", "group_by": ["alertname"], "group_wait": "1s",
                      "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "test", "webhook_configs": [
                {"url": self.webhook_url, "send_resolved": False}]}],
        }
        config_path = self.workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        with (self.workdir / "alertmanager.log").open("ab") as log:  # the child keeps its copy
            self._proc = subprocess.Popen(
                [binary, f"--config.file={config_path}",
                 f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        if not wait_for(self._ready, timeout_s, interval_s=0.2):
            self.stop()
            raise AlertmanagerError(f"alertmanager did not get ready in {timeout_s:.0f}s: "
                                    f"{self.log_tail()}")
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (API v2)."""
        with urllib.request.urlopen(f"http://{self.address}/api/v2/alerts", timeout=10) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)
        return alerts

    def log_tail(self, chars: int = 2000) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise AlertmanagerError(f"alertmanager exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
