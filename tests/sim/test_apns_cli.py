"""``python -m services.sim.apns`` as another process: certificates, READY line, faults, stats."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

TOPIC = "com.apple.mgmt.External.7c9e6679-7425-40de-944b-e07fc1f90ae7"
TOKEN = "cd" * 32


def test_cli_serves_with_faults_and_writes_stats(tmp_path: Path) -> None:
    certs, stats = tmp_path / "certs", tmp_path / "stats.json"
    cmd = [
        sys.executable, "-m", "services.sim.apns",
        "--certs", str(certs), "--issue-topic", TOPIC,
        "--max-concurrent-streams", "50",
        "--fault-unregistered-tokens", "ee" * 32,
        "--stats-file", str(stats),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().split()  # blocks until listening (or exit: empty line)
        assert ready[:2] == ["READY", "127.0.0.1"], ready
        port = int(ready[2])
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        ctx.load_cert_chain(str(certs / f"{TOPIC}.pem"), str(certs / f"{TOPIC}.key"))
        with httpx.Client(http2=True, verify=ctx, timeout=10) as c:
            url = f"https://127.0.0.1:{port}/3/device/"
            ok = c.post(url + TOKEN, json={"mdm": "m"}, headers={"apns-push-type": "mdm"})
            gone = c.post(url + "ee" * 32, json={"mdm": "m"})
        assert ok.status_code == 200
        assert gone.status_code == 410 and gone.json()["reason"] == "Unregistered"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    counters = json.loads(stats.read_text())
    assert counters["accepted"] == 1
    assert counters["by_status"] == {"200": 1, "410": 1}
    assert counters["by_topic"] == {TOPIC: 1}
