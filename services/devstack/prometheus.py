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
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from services.devstack.procs import free_port, wait_for

__all__ = ["LocalPrometheus", "PrometheusError"]


class PrometheusError(RuntimeError):
    """Prometheus is missing, did not start, or refused a query."""


class LocalPrometheus:
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
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.alertmanagers = alertmanagers
        self.scrape_interval_s = scrape_interval_s
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

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
        self.port = free_port()
        with (self.workdir / "prometheus.log").open("ab") as log:  # the child keeps its copy
            self._proc = subprocess.Popen(
                [binary, f"--config.file={config_path}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        if not wait_for(self._ready, timeout_s, interval_s=0.2):
            self.stop()
            raise PrometheusError(f"prometheus did not get ready in {timeout_s:.0f}s: "
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

    def log_tail(self, chars: int = 2000) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise PrometheusError(f"prometheus exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

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
