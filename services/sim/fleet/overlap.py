"""The overlapping world: devices with several causes at once, healthy devices pushed right after
enrolling among the racers, late answers and out-of-order check-ins.

The one-cause world (:mod:`.scenario`) is separable by construction: one cause per device, the
racers enrolled as their own batch. Here every device has a :class:`Profile`: the causes it
carries at once, the batch it enrolls in, and, for each of its records, every diagnosis the
server can hold evidence for. The right answer is the one an operator must act on first
(:func:`~services.sim.fleet.truth.rightful`). One truth is known only after the run, from what
the device itself saw: an enrollment race is one only if the device was still deaf when the push
arrived. Its deaf time is the device's own, drawn per device, and never given to the correlator.

Timings are the device's, or derived from the deadline every party knows (the contract: no
contact by then is UNANSWERED), never from the correlator's internal race window.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.clock import Clock
from services.sim.fleet.device import AfterEnroll, SimDevice
from services.sim.fleet.fleet import Fleet, FleetParams
from services.sim.fleet.scenario import dealt, make_device, random_token, random_uuid
from services.sim.fleet.sink import CheckinSink
from services.sim.fleet.truth import ANSWERED, Cause, rightful

__all__ = ["OVERLAP_SHARES", "OverlapSpec", "OverlapWorld", "Profile", "build_overlap"]

_RACE = "enrollment_race"
_UNREACHABLE = "device_unreachable"


class Profile(enum.Enum):
    """What a device of the overlapping world is: its causes, joined by '+'."""

    HEALTHY = "healthy"
    OFFLINE_STALE_MAGIC = "offline+stale_magic"
    CHECKOUT_STALE_MAGIC = "checked_out+stale_magic"
    RESTORED_STALE_MAGIC = "restored+stale_magic"
    RESTORED_SLOW = "restored+slow"
    WRONG_TOPIC_OFFLINE = "wrong_topic+offline"
    #: Polls the deadline minus the margin after the push (a late answer, still in time).
    LATE_IN_TIME = "late_in_time"
    #: Polls the deadline plus the margin after the push (too late: UNANSWERED stands).
    LATE_AFTER_DEADLINE = "late_after_deadline"
    #: Polls the deadline minus the margin after the push, and the poll reaches the server
    #: twice the margin later: answered in time by the device's clock, known after the deadline.
    IN_TIME_DELIVERED_LATE = "in_time_delivered_late"
    #: Offline when pushed, back before the deadline: APNs hands over the stored push.
    OFFLINE_BRIEFLY = "offline_briefly"
    #: A poll stamped at enrollment, delivered after the push was sent: it must not answer it.
    OLD_POLL_LATE = "old_poll_late"
    OLD_POLL_LATE_OFFLINE = "old_poll_late+offline"
    #: The fresh batch: enrolled together right before their push.
    FRESH_HEALTHY = "fresh+healthy"
    FRESH_RACE = "fresh+race"
    FRESH_RACE_SLOW = "fresh+race+slow"
    FRESH_OFFLINE = "fresh+offline"


@dataclass(frozen=True, slots=True)
class _Shape:
    base: Cause
    #: Diagnoses evidenced for a push to the record the device uses (RACE: decided after the run).
    current: frozenset[str]
    #: ... and to its older duplicate record (a STALE_MAGIC base only).
    stale: frozenset[str] = frozenset()
    after_enroll: AfterEnroll | None = None
    fresh: bool = False
    restored: bool = False
    slow: bool = False
    held_poll: bool = False


def _s(*names: str) -> frozenset[str]:
    return frozenset(names)


_SHAPES: dict[Profile, _Shape] = {
    Profile.HEALTHY: _Shape(Cause.HEALTHY, _s(ANSWERED)),
    Profile.OFFLINE_STALE_MAGIC: _Shape(Cause.STALE_MAGIC, _s(_UNREACHABLE),
                                        _s("stale_push_magic", _UNREACHABLE),
                                        AfterEnroll.GO_OFFLINE),
    Profile.CHECKOUT_STALE_MAGIC: _Shape(Cause.STALE_MAGIC, _s("unenrolled"),
                                         _s("unenrolled", "stale_push_magic"),
                                         AfterEnroll.UNENROLL_CHECKOUT),
    # The old record's token is old too, but the device's new token is reported on its current
    # record: for the old one the duplicate is the fault (no new token would make it answer).
    Profile.RESTORED_STALE_MAGIC: _Shape(Cause.STALE_MAGIC, _s("stale_token"),
                                         _s("stale_push_magic"), restored=True),
    Profile.RESTORED_SLOW: _Shape(Cause.RESTORED_TOKEN, _s("stale_token"), slow=True),
    Profile.WRONG_TOPIC_OFFLINE: _Shape(Cause.WRONG_TOPIC, _s("wrong_topic", _UNREACHABLE),
                                        after_enroll=AfterEnroll.GO_OFFLINE),
    Profile.LATE_IN_TIME: _Shape(Cause.HEALTHY, _s(ANSWERED)),
    Profile.LATE_AFTER_DEADLINE: _Shape(Cause.HEALTHY, _s(_UNREACHABLE)),
    # The device answered before the deadline; an UNANSWERED alert for it would be a false one.
    Profile.IN_TIME_DELIVERED_LATE: _Shape(Cause.HEALTHY, _s(ANSWERED)),
    Profile.OFFLINE_BRIEFLY: _Shape(Cause.OFFLINE, _s(ANSWERED)),
    Profile.OLD_POLL_LATE: _Shape(Cause.HEALTHY, _s(ANSWERED), held_poll=True),
    Profile.OLD_POLL_LATE_OFFLINE: _Shape(Cause.OFFLINE, _s(_UNREACHABLE), held_poll=True),
    Profile.FRESH_HEALTHY: _Shape(Cause.HEALTHY, _s(ANSWERED), fresh=True),
    Profile.FRESH_RACE: _Shape(Cause.ENROLLMENT_RACE, _s(_RACE), fresh=True),
    Profile.FRESH_RACE_SLOW: _Shape(Cause.ENROLLMENT_RACE, _s(_RACE), fresh=True, slow=True),
    Profile.FRESH_OFFLINE: _Shape(Cause.OFFLINE, _s(_UNREACHABLE), fresh=True),
}

#: Default mix (normalised): a quarter plainly healthy, a quarter fresh, every profile present.
OVERLAP_SHARES: dict[Profile, float] = {
    Profile.HEALTHY: 0.25, Profile.OFFLINE_STALE_MAGIC: 0.05, Profile.CHECKOUT_STALE_MAGIC: 0.05,
    Profile.RESTORED_STALE_MAGIC: 0.05, Profile.RESTORED_SLOW: 0.05,
    Profile.WRONG_TOPIC_OFFLINE: 0.04, Profile.LATE_IN_TIME: 0.05,
    Profile.LATE_AFTER_DEADLINE: 0.05, Profile.IN_TIME_DELIVERED_LATE: 0.02,
    Profile.OFFLINE_BRIEFLY: 0.05, Profile.OLD_POLL_LATE: 0.05,
    Profile.OLD_POLL_LATE_OFFLINE: 0.05, Profile.FRESH_HEALTHY: 0.10, Profile.FRESH_RACE: 0.08,
    Profile.FRESH_RACE_SLOW: 0.04, Profile.FRESH_OFFLINE: 0.04,
}


@dataclass(frozen=True)
class OverlapSpec:
    """What overlapping world to build (all times in simulated ms)."""

    devices: int
    #: Tenant -> the push topic of the certificate its server holds.
    tenants: Mapping[str, str]
    #: The correlator's deadline (the contract's, known to every party).
    deadline_ms: int
    shares: Mapping[Profile, float] = field(default_factory=lambda: dict(OVERLAP_SHARES))
    seed: int = 0
    #: Late answers come this long before or after the deadline.
    late_margin_ms: int = 3_000
    #: A slow device's poll delay after a push.
    slow_ms: int = 8_000
    #: A racer is deaf for a time drawn uniformly from this range after its TokenUpdate (Apple
    #: saw 0.7 s; the registry here takes seconds to push a new enrollment, more under load).
    race_deaf_ms: tuple[int, int] = (1_000, 9_000)
    #: OFFLINE_BRIEFLY devices come back this long after their request is published.
    back_online_ms: int = 15_000


@dataclass
class OverlapWorld:
    """The built world; :meth:`expected` is read after the run (the races are the devices')."""

    spec: OverlapSpec
    fleet: Fleet
    devices: list[SimDevice]
    profiles: list[Profile]

    def _of(self, fresh: bool) -> list[SimDevice]:
        return [d for d, p in zip(self.devices, self.profiles, strict=True)
                if _SHAPES[p].fresh is fresh]

    @property
    def early(self) -> list[SimDevice]:
        """Enrolled first; pushed once the registry knows them."""
        return self._of(False)

    @property
    def fresh(self) -> list[SimDevice]:
        """Enrolled together right before their push: racers, healthy and offline alike."""
        return self._of(True)

    def having(self, profile: Profile) -> list[SimDevice]:
        return [d for d, p in zip(self.devices, self.profiles, strict=True) if p is profile]

    def records(self) -> dict[str, tuple[SimDevice, str]]:
        """Every enrollment id pushed -> its device and a label: the profile, with ' (old
        record)' for a duplicate record."""
        out: dict[str, tuple[SimDevice, str]] = {}
        for device, profile in zip(self.devices, self.profiles, strict=True):
            out[device.enrollment.enrollment_id] = (device, profile.value)
            if device.stale_enrollment is not None:
                out[device.stale_enrollment.enrollment_id] = (
                    device, f"{profile.value} (old record)")
        return out

    def expected(self) -> dict[str, str]:
        """Enrollment id -> the right diagnosis of a push to it; call after the run: a racer
        whose push arrived once it listened simply answered."""
        out: dict[str, str] = {}
        for device, profile in zip(self.devices, self.profiles, strict=True):
            shape = _SHAPES[profile]
            current = set(shape.current)
            if _RACE in current and device.races_lost == 0:
                current = {ANSWERED}
            out[device.enrollment.enrollment_id] = rightful(current)
            if device.stale_enrollment is not None:
                out[device.stale_enrollment.enrollment_id] = rightful(shape.stale)
        return out


def build_overlap(spec: OverlapSpec, clock: Clock, sink: CheckinSink,
                  params: FleetParams | None = None) -> OverlapWorld:
    """Build ``spec.devices`` devices (deterministic for ``spec.seed``) in a new :class:`Fleet`."""
    if not spec.tenants:
        raise ValueError("a world needs at least one tenant")
    if spec.late_margin_ms >= spec.deadline_ms:
        raise ValueError("the late margin must be shorter than the deadline")
    rng = random.Random(spec.seed)
    fleet = Fleet(clock, sink, params)
    tenants = sorted(spec.tenants)
    retired = {tenant: f"com.apple.mgmt.External.{random_uuid(rng)}" for tenant in tenants}
    profiles = dealt(rng, spec.devices, spec.shares)
    devices = []
    for index, profile in enumerate(profiles):
        tenant = tenants[index % len(tenants)]
        shape = _SHAPES[profile]
        topic = retired[tenant] if shape.base is Cause.WRONG_TOPIC else spec.tenants[tenant]
        device = make_device(rng, shape.base, tenant, topic, fleet.params, None)
        _overlay(device, profile, shape, spec, rng)
        devices.append(device)
    fleet.add(devices)
    return OverlapWorld(spec, fleet, devices, profiles)


def _overlay(device: SimDevice, profile: Profile, shape: _Shape, spec: OverlapSpec,
             rng: random.Random) -> None:
    """Add the profile's other causes to a one-cause device."""
    if shape.after_enroll is not None:
        device.after_enroll = shape.after_enroll
    if shape.restored:
        device.token_hex = random_token(rng)
    if device.stale_enrollment is not None:
        device.stale_delivered_last = True  # older stamps, delivered after the newer record's
    if shape.base is Cause.ENROLLMENT_RACE:
        device.listen_delay_ms = rng.randint(*spec.race_deaf_ms)
    if shape.slow:
        device.checkin_delay_ms = spec.slow_ms
    device.held_poll = shape.held_poll
    if profile is Profile.LATE_IN_TIME:
        device.checkin_delay_ms = spec.deadline_ms - spec.late_margin_ms
    elif profile is Profile.LATE_AFTER_DEADLINE:
        device.checkin_delay_ms = spec.deadline_ms + spec.late_margin_ms
    elif profile is Profile.IN_TIME_DELIVERED_LATE:
        device.checkin_delay_ms = spec.deadline_ms - spec.late_margin_ms
        device.poll_delivered_after_ms = 2 * spec.late_margin_ms
