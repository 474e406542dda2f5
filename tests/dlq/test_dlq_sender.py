"""End to end with the real sender and the APNs simulator: jobs exhausted on 500s land on the DLQ
the sender's own way; once APNs is healthy again, `mdmpush dlq replay` puts them back and the
same sender delivers each exactly once, as a fresh job."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.sim.apns.faults import Faults
from tests.support.sender_harness import (
    Reader,
    create_retry_topics,
    job,
    make_certs,
    produce_jobs,
    running_sender,
    sender_settings,
    start_sim,
)


def states(records: list[dict[str, Any]], state: str) -> Counter[str]:
    return Counter(r["job_id"] for r in records if r.get("state") == state)


@pytest.mark.kafka
def test_dead_lettered_jobs_are_replayed_once_and_delivered(
    kafka_settings: KafkaSettings, cli_env: Topics, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    create_retry_topics(kafka_settings)
    pki = make_certs(tmp_path, 1)
    cert = pki.topics[0]
    bulk = [job(cert, n) for n in range(4)]
    priority = [job(cert, n, lane="PRIORITY", request="user-req") for n in range(4, 6)]
    everyone = {j["job_id"] for j in bulk + priority}
    produce_jobs(kafka_settings, cli_env.jobs_bulk, bulk)
    produce_jobs(kafka_settings, cli_env.jobs_priority, priority)
    outcomes = Reader(kafka_settings, cli_env.outcomes)
    try:
        with start_sim(pki, faults=Faults(share_500=1.0)) as sim, running_sender(
                sender_settings(pki, sim.url, default_max_attempts=2), kafka_settings):
            outcomes.wait(lambda rs: set(states(rs, "DEAD_LETTERED")) == everyone, 90)
            assert not states(outcomes.records, "SENT")
            sim.faults.share_500 = 0.0  # APNs is healthy again

            assert main(["dlq", "list"]) == 0
            listed = capsys.readouterr().out
            assert listed.splitlines()[-1].split()[0] == "6" and "attempts exhausted" in listed

            assert main(["dlq", "replay", "--dry-run"]) == 0
            assert "would replay 6," in capsys.readouterr().out

            assert main(["dlq", "replay", "--lane", "priority", "--progress"]) == 0
            out = capsys.readouterr()
            assert "replayed 2, already replayed 0" in out.out
            assert "replay [" in out.err and "2/2" in out.err  # the progress bar
            assert main(["dlq", "replay"]) == 0
            assert "replayed 4, already replayed 2" in capsys.readouterr().out

            outcomes.wait(lambda rs: set(states(rs, "SENT")) == everyone, 90)
            assert main(["dlq", "replay"]) == 0  # a second replay is a no-op
            assert "replayed 0, already replayed 6" in capsys.readouterr().out
            outcomes.drain(quiet_s=2.0)
    finally:
        outcomes.close()
    sent = [r for r in outcomes.records if r.get("state") == "SENT"]
    assert states(sent, "SENT") == Counter({j: 1 for j in everyone})  # each exactly once
    assert {r["attempt"] for r in sent} == {0}  # as fresh jobs
