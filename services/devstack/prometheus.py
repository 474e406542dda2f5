"""A real Prometheus on loopback, scraping given targets: for the monitoring test.

Debian's `prometheus` package (scripts/setup-debian.sh) provides the binary; this module writes a
scrape configuration (1 s interval, so a test sees its traffic within seconds), starts it with
data in a throw-away directory, waits for /-/ready and answers instant queries through the
HTTP API. Queries that Prometheus refuses raise, with Prometheus's own message. Given
Alertmanager addresses (services/devstack/alertmanager.py), it sends its firing alerts there.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from services.devstack.daemon import LocalDaemon

__all__ = ["LocalPrometheus", "PrometheusError"]


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or refused a query."""


class LocalPrometheus(LocalDaemon):
    name = "prometheus"
    error = PrometheusError

    def __init__(
        self,
        workdir: Path,
        targets: Mapping[str, Sequence[str]],
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
        alertmanagers: Sequence[str] = (),
    ) -> None:
        """`targets`: scrape job name → ["host:port", ...] serving /metrics; `alertmanagers`:
        "host:port" of the Alertmanagers to notify."""
        super().__init__(workdir)
        self.targets = targets
        self.rule_files = rule_files
        self.alertmanagers = alertmanagers
        self.scrape_interval_s = scrape_interval_s

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusError("prometheus is not installed (scripts/setup-debian.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in self.targets.items()
            ],
        }
        if self.alertmanagers:
            config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": list(self.alertmanagers)}]}]}
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._launch(lambda port: [
            binary, f"--config.file={config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"], timeout_s)
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; PrometheusError with its reason if refused."""
        data = self._api("query", {"query": expr})
        result: list[dict[str, Any]] = data["result"]
        return result

    def targets_up(self) -> dict[str, bool]:
        """scrape URL → whether its last scrape succeeded."""
        active = self._api("targets", {})["activeTargets"]
        return {t["scrapeUrl"]: t["health"] == "up" for t in active}

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its `health` and `lastError` after evaluation."""
        groups = self._api("rules", {})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def _api(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query, with Prometheus's reason
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {dict(params)}: {body.get('error', body)}")
        return body["data"]
