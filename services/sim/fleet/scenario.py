"""A deterministic fleet with a mix of the Apple seed's failure causes, and its ground truth.

``build_scenario(ScenarioSpec(devices=10_000, tenants={"acme": topic}, shares={...}, seed=7),
clock, sink)`` gives the same devices, tokens, magics and causes for the same seed, so an
accuracy run's confusion matrix is reproducible. Shares become exact counts (largest remainder),
not random draws, so a 2 % cause is 2 % of the fleet.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from services.common.clock import Clock
from services.sim.fleet.device import AfterEnroll, SimDevice
from services.sim.fleet.events import Enrollment
from services.sim.fleet.fleet import Fleet, FleetParams
from services.sim.fleet.sink import CheckinSink
from services.sim.fleet.truth import ANSWERED, Cause, DeviceTruth

K = TypeVar("K", bound=enum.Enum)

__all__ = ["Scenario", "ScenarioSpec", "allocate", "build_scenario", "make_device", "random_token",
           "random_uuid"]

_AFTER_ENROLL = {
    Cause.OFFLINE: AfterEnroll.GO_OFFLINE,
    Cause.UNENROLLED_SILENT: AfterEnroll.UNENROLL_SILENT,
    Cause.UNENROLLED_CHECKOUT: AfterEnroll.UNENROLL_CHECKOUT,
    Cause.WIPED: AfterEnroll.WIPE,
}


@dataclass(frozen=True)
class ScenarioSpec:
    """What fleet to build.

    ``tenants`` maps each tenant to the push topic of the certificate its server holds now, or
    to several (a tenant with more than one push certificate: its devices are spread over them);
    WRONG_TOPIC devices listen on a retired topic of their tenant instead (see
    :attr:`Scenario.retired_topics`). ``shares`` need not sum to 1 (they are normalised).
    """

    devices: int
    tenants: Mapping[str, str | tuple[str, ...]]
    shares: Mapping[Cause, float] = field(default_factory=lambda: {Cause.HEALTHY: 1.0})
    seed: int = 0
    #: OFFLINE devices come back online this many simulated ms after enrolling (None: never).
    offline_for_ms: int | None = None


def dealt(rng: random.Random, total: int, shares: Mapping[K, float]) -> list[K]:
    """``total`` causes (or profiles) in the proportions of ``shares`` (``allocate``), shuffled
    by ``rng``: which device gets which is random but fixed by the seed."""
    kinds = [kind for kind, n in sorted(allocate(total, shares).items(),
                                        key=lambda item: item[0].value) for _ in range(n)]
    rng.shuffle(kinds)
    return kinds


def allocate(total: int, shares: Mapping[K, float]) -> dict[K, int]:
    """Exact device counts per cause (or profile) summing to ``total`` (largest-remainder
    method)."""
    weights = {cause: share for cause, share in shares.items() if share > 0}
    if not weights:
        raise ValueError("at least one cause needs a positive share")
    norm = sum(weights.values())
    exact = {cause: total * share / norm for cause, share in weights.items()}
    counts = {cause: int(value) for cause, value in exact.items()}
    by_remainder = sorted(weights, key=lambda c: (-(exact[c] - counts[c]), c.value))
    for cause in by_remainder[: total - sum(counts.values())]:
        counts[cause] += 1
    return counts


@dataclass
class Scenario:
    """The built fleet, its devices and what each one really is."""

    spec: ScenarioSpec
    fleet: Fleet
    devices: list[SimDevice]
    truth: list[DeviceTruth]
    #: Tenant -> the topic of the certificate it replaced instead of renewing.
    retired_topics: dict[str, str]

    def enroll_all(self, timeout_s: float = 120.0) -> None:
        """Every device enrolls (check-ins acknowledged by the sink on return); then each
        cause's setup applies (offline, unenrolled with or without CheckOut, wiped)."""
        self.fleet.enroll(self.devices, timeout_s)

    def by_cause(self, cause: Cause) -> list[SimDevice]:
        return [d for d in self.devices if d.cause is cause]

    def expected_by_enrollment(self) -> dict[str, str]:
        """Enrollment id -> expected diagnosis of a push to it (:data:`ANSWERED` when answered).

        A STALE_MAGIC device has two records: the stale one is ``stale_push_magic``, the current
        one answers.
        """
        expected: dict[str, str] = {}
        for t in self.truth:
            expected[t.current_enrollment_id] = ANSWERED
            expected[t.enrollment_id] = t.diagnosis
        return expected

    def expected_as_seen(self) -> dict[str, str]:
        """:meth:`expected_by_enrollment` read after the run: a racer whose push arrived once it
        listened (the registry pushed it after its window) simply answered."""
        expected = self.expected_by_enrollment()
        for device in self.by_cause(Cause.ENROLLMENT_RACE):
            if device.races_lost == 0:
                expected[device.enrollment.enrollment_id] = ANSWERED
        return expected


def build_scenario(
    spec: ScenarioSpec,
    clock: Clock,
    sink: CheckinSink,
    params: FleetParams | None = None,
) -> Scenario:
    """Build ``spec.devices`` devices (deterministic for ``spec.seed``) in a new :class:`Fleet`."""
    if not spec.tenants:
        raise ValueError("a scenario needs at least one tenant")
    rng = random.Random(spec.seed)
    fleet = Fleet(clock, sink, params)
    tenants = sorted(spec.tenants)
    retired = {tenant: f"com.apple.mgmt.External.{random_uuid(rng)}" for tenant in tenants}
    causes = dealt(rng, spec.devices, spec.shares)
    devices: list[SimDevice] = []
    truth: list[DeviceTruth] = []
    for index, cause in enumerate(causes):
        tenant = tenants[index % len(tenants)]
        held = spec.tenants[tenant]
        current = held if isinstance(held, str) else held[(index // len(tenants)) % len(held)]
        topic = retired[tenant] if cause is Cause.WRONG_TOPIC else current
        device = make_device(rng, cause, tenant, topic, fleet.params, spec.offline_for_ms)
        devices.append(device)
        truth.append(_truth(device))
    fleet.add(devices)
    return Scenario(spec, fleet, devices, truth, retired)


def make_device(
    rng: random.Random,
    cause: Cause,
    tenant: str,
    topic: str,
    params: FleetParams,
    offline_for_ms: int | None,
) -> SimDevice:
    """One device with one cause (the overlapping world, :mod:`.overlap`, adds the others)."""
    udid = f"{rng.getrandbits(32):08X}-{rng.getrandbits(64):016X}"
    token = random_token(rng)
    enrollment = Enrollment(udid, tenant, udid, topic, token, random_uuid(rng))
    device = SimDevice(
        udid=udid,
        cause=cause,
        enrollment=enrollment,
        token_hex=token,
        after_enroll=_AFTER_ENROLL.get(cause, AfterEnroll.STAY),
        offline_for_ms=offline_for_ms,
    )
    if cause is Cause.RESTORED_TOKEN:
        device.token_hex = random_token(rng)  # restored after enrolling: the server has the old
    elif cause is Cause.STALE_MAGIC:
        # The older record: its own enrollment id, same device and token, an older magic.
        device.stale_enrollment = Enrollment(random_uuid(rng), tenant, udid, topic, token,
                                             random_uuid(rng))
    elif cause is Cause.ENROLLMENT_RACE:
        device.listen_delay_ms = params.race_window_ms
    return device


def _truth(device: SimDevice) -> DeviceTruth:
    stale = device.stale_enrollment
    pushed = stale if stale is not None else device.enrollment
    return DeviceTruth(
        udid=device.udid,
        tenant=device.enrollment.tenant,
        cause=device.cause,
        enrollment_id=pushed.enrollment_id,
        current_enrollment_id=device.enrollment.enrollment_id,
        topic=pushed.topic,
        token_hex=pushed.token_hex,
        push_magic=pushed.push_magic,
    )


def random_token(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
