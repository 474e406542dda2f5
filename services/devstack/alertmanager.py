"""A real Alertmanager on loopback delivering every alert to one webhook: for the monitoring test.

Debian's `prometheus-alertmanager` package (scripts/setup-debian.sh) provides the binary. The
configuration routes everything to the given webhook URL with one-second grouping, so a firing
alert arrives within seconds; clustering is off (no gossip port), data lives in a throw-away
directory. Prometheus is pointed at it with LocalPrometheus(alertmanagers=[am.address]).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from services.devstack.daemon import LocalDaemon

__all__ = ["AlertmanagerError", "LocalAlertmanager"]

#: Debian names the binary after the package; upstream tarballs call it `alertmanager`.
BINARIES = ("prometheus-alertmanager", "alertmanager")


class AlertmanagerError(RuntimeError):
    """Alertmanager is missing or did not start."""


class LocalAlertmanager(LocalDaemon):
    name = "alertmanager"
    error = AlertmanagerError

    def __init__(self, workdir: Path, webhook_url: str) -> None:
        super().__init__(workdir)
        self.webhook_url = webhook_url

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
        self._launch(lambda port: [
            binary, f"--config.file={config_path}", f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], timeout_s)
        return self

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds now (API v2)."""
        with urllib.request.urlopen(f"http://{self.address}/api/v2/alerts", timeout=10) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)
        return alerts
