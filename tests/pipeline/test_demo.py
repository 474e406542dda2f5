"""The README's first command ends in `mdmpush demo`: its pipeline run, on a small fleet.

Besides the accuracy run, the demo shows what issue 10 asks of it: the certificate inventory,
a coalesced burst, a followed request and silent-device care. The counts it prints are read back
from the topics; here they are checked against each other and against the fleet's size, never
against numbers fixed in the test.
"""

from __future__ import annotations

import re

import pytest

from services.cli.demo_cmd import BURST, demo
from services.common.settings import KafkaSettings

DEVICES = 40


def number(pattern: str, out: str) -> tuple[int, ...]:
    """The integers `pattern`'s groups capture in the demo's output (which must match)."""
    found = re.search(pattern, out)
    assert found, f"{pattern!r} not in the demo's output:\n{out[-4000:]}"
    return tuple(int(g) for g in found.groups())


@pytest.mark.kafka
def test_demo_accounts_for_every_push_and_explains_a_device(
    kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str],
) -> None:
    demo(kafka_settings, DEVICES)
    out = capsys.readouterr().out
    assert "100.0 % right; 0 push(es) unaccounted for" in out, out[-3000:]
    assert "[demo] alerts by diagnosis: " in out
    assert "stale_push_magic" in out  # the device `doctor` explains
    assert "[demo] mdmpush doctor feedback" in out and "apns-id" in out.lower()

    # The certificate inventory: `certs list` of the sender's directory, one per tenant.
    inventory = out.split("[demo] mdmpush certs list", 1)[1].splitlines()[1:4]
    assert inventory[0].split()[:3] == ["topic", "serial", "issuer"], inventory
    assert [row.split()[-1] for row in inventory[1:]] == ["ok", "ok"], inventory

    # The burst: every (request, device) pair is either a push or rides on one, and is
    # accounted for; at least one rode (the requests came faster than any device answers).
    (targets,) = number(rf"{BURST} bulk requests to the same (\d+) acme devices", out)
    pairs, sent, coalesced, accounted, total = number(
        r"coalesced burst: (\d+) \(request, device\) pairs: pushes sent (\d+), SKIPPED "
        r"coalesced (\d+), accounted for (\d+)/(\d+)", out)
    assert targets > 0 and pairs == total == BURST * targets
    assert sent + coalesced == pairs and accounted == pairs
    assert 1 <= sent < pairs and coalesced >= 1
    riders = [int(n) for n in re.findall(r"request \d \S+: pushed \d+, rode on a push (\d+)", out)]
    assert len(riders) == BURST and sum(riders) == coalesced

    # The followed request (the burst's first): live lines, then a complete summary.
    follow = out.split("[demo] mdmpush follow ", 1)[1]
    request_id = follow.split()[0]
    assert re.search(rf"{request_id}: \d+/{targets} done", follow)
    assert f"request {request_id}: {targets} target(s), complete" in follow

    # Silent-device care: the silent fleet re-armed, the healthy part answering, the offline
    # part inactive.
    silent, rearmed, answered, inactive = number(
        r"silent-device care: silent past rearm_after (\d+), re-armed (\d+), answered after "
        r"re-arm (\d+), inactive (\d+)", out)
    assert 1 <= answered <= rearmed <= silent <= 2 * DEVICES  # a stale-magic device: two
    assert 1 <= inactive <= silent
    assert re.search(r"answered after re-arm by simulated cause: .*healthy \d+", out)
    assert re.search(r"inactive by simulated cause: .*offline \d+", out)
    assert "healthy" not in out.split("inactive by simulated cause:", 1)[1].splitlines()[0]
