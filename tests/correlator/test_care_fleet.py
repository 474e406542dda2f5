"""Silent-device care on the real broker, with the fleet simulator behind the APNs simulator, on a
compressed clock: a fleet enrolls and then nobody pushes it for eight simulated days.

Healthy devices answer every re-arm push (and are re-armed once per silence, a day apart);
offline devices get exactly one re-arm, never answer, and are marked INACTIVE after seven days.
The counts (silent, re-armed, answered after re-arm, inactive) are the correlator's own metrics,
checked against what the topics, the fleet and `doctor device` say. Run with -s, it prints them
for the figures.
"""

from __future__ import annotations

import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde
from services.devstack.procs import free_port, wait_for
from services.doctor.history import load_history
from services.doctor.render import history_text
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, ScenarioSpec
from tests.pipeline.conftest import PipelineFactory, pipeline_factory  # noqa: F401 (fixture)

#: One real second is ~5.6 simulated hours: eight simulated days in about 35 real seconds.
SPEED = 20_000.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
HEALTHY, OFFLINE = 30, 10


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.mark.kafka
def test_a_silent_fleet_is_re_armed_once_per_silence_and_the_offline_part_goes_inactive(
    pipeline_factory: PipelineFactory,  # noqa: F811 (the imported fixture)
) -> None:
    port = free_port()
    spec = ScenarioSpec(devices=HEALTHY + OFFLINE, tenants={"acme": mdm_topic()},
                        shares={Cause.HEALTHY: HEALTHY, Cause.OFFLINE: OFFLINE}, seed=5)
    clock = Clock(speed=SPEED)
    pipeline, scenario, tracker = pipeline_factory(
        spec, clock=clock, fanout=False,
        env={"correlator": {"MDMPUSH_CORRELATOR_METRICS_PORT": str(port),
                            "MDMPUSH_CORRELATOR_TIMER_TICK_MS": str(HOUR_MS // 60)}})
    # Enroll once the correlator holds its partitions: at this speed its start-up alone is a
    # simulated day, which would shift every first re-arm.
    assert wait_for(lambda: ready(port), timeout_s=120, interval_s=0.2), pipeline.logs()
    scenario.enroll_all()
    enrolled_by = clock.now_ms()
    offline = {t.enrollment_id for t in scenario.truth if t.cause is Cause.OFFLINE}
    healthy = {t.enrollment_id for t in scenario.truth if t.cause is Cause.HEALTHY}
    assert len(offline) == OFFLINE and len(healthy) == HEALTHY

    def counts() -> dict[str, float]:
        try:
            return scrape(port)
        except OSError:
            return {}

    def settled() -> bool:
        c = counts()
        return (c.get("mdmpush_correlator_inactive_enrollments") == OFFLINE
                and c.get("mdmpush_correlator_rearm_answered_total", 0) >= HEALTHY)

    assert wait_for(settled, timeout_s=240, interval_s=1.0), (counts(), pipeline.logs())
    final = counts()
    now = clock.now_ms()

    outcomes, _ = tracker.snapshot()
    rearms = [o for o in outcomes if o["request_id"].startswith("rearm-") and o["state"] == "SENT"]
    per_enrollment = Counter(o["enrollment_id"] for o in rearms)
    # Every device was re-armed, none before a day of silence.
    assert set(per_enrollment) == offline | healthy
    assert all(o["at"] >= enrolled_by - HOUR_MS + DAY_MS for o in rearms)
    # An offline device's silence never ends: one re-arm, whatever the time that passed.
    assert {per_enrollment[e] for e in offline} == {1}
    # A healthy one answers, so each day of silence is a new one: at most one re-arm a day.
    days = (now - enrolled_by) / DAY_MS
    assert all(1 <= per_enrollment[e] <= days + 1 for e in healthy)
    # The fleet received them: healthy devices polled after their pushes.
    assert scenario.fleet.stats().receptions["answered"] >= HEALTHY

    # The activity topic says the same: the offline ones, and only they, are INACTIVE.
    serde = AvroSerde()
    latest = {}
    for msg in read_to_end(pipeline.kafka, Topics(pipeline.kafka.topic_prefix).activity,
                           timeout_s=30, name="test-activity"):
        record = serde.decode_as(msg.value(), "EnrollmentActivity")
        latest[record["enrollment_id"]] = record
    assert {e for e, r in latest.items() if r["state"] == "INACTIVE"} == offline
    assert all(latest[e]["rearmed_at"] for e in offline | healthy)

    # `mdmpush doctor device` shows it.
    quiet, answering = sorted(offline)[0], sorted(healthy)[0]
    assert "activity   INACTIVE since" in history_text(load_history(pipeline.kafka, quiet))
    assert "activity   ACTIVE (as of" in history_text(load_history(pipeline.kafka, answering))

    first = [min(o["at"] for o in rearms if o["enrollment_id"] == e) - enrolled_by
             for e in per_enrollment]
    pushes = final["mdmpush_correlator_rearm_pushes_total"]
    answered = final["mdmpush_correlator_rearm_answered_total"]
    print(f"\ncare figures: fleet {HEALTHY + OFFLINE} ({HEALTHY} healthy, {OFFLINE} offline), "
          f"{days:.1f} simulated days at speed {SPEED:.0f}: silent past rearm_after "
          f"{len(per_enrollment)}, re-arm pushes {pushes:.0f} to {len(per_enrollment)} "
          f"enrollments, answered after re-arm {answered:.0f}, inactive "
          f"{final['mdmpush_correlator_inactive_enrollments']:.0f}; first re-arm "
          f"{min(first) / HOUR_MS:.1f}-{max(first) / HOUR_MS:.1f} h after enrolling")
