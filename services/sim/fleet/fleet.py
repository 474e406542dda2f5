"""The device fleet: the APNs simulator's :class:`DeviceGateway`, and the devices' MDM client.

The simulator asks :meth:`Fleet.token_status` and calls :meth:`Fleet.deliver` on its event-loop
thread; both answer from an index built when devices are added and hand everything else to the
fleet's :class:`~services.sim.fleet.scheduler.Scheduler`, so the simulator's hot path never
waits for a device. What a device then does (poll after a processing delay, report a new token,
self-heal) happens on the scheduler in simulated time and reaches the server through a
:class:`~services.sim.fleet.sink.CheckinSink`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from services.common.clock import Clock
from services.sim.apns.fleet_port import (
    STATUS_ACTIVE,
    STATUS_OTHER_TOPIC,
    STATUS_UNKNOWN,
    AcceptedPush,
    TokenStatus,
)
from services.sim.fleet import events
from services.sim.fleet.device import SELF_HEAL_AFTER_MS, AfterEnroll, Reception, SimDevice
from services.sim.fleet.scheduler import Scheduler
from services.sim.fleet.sink import CheckinSink

__all__ = ["DeviceConnector", "Fleet", "FleetParams", "FleetStats"]

#: Devices enrolled per scheduler turn, so pushes are not held up by a big enrollment.
_ENROLL_CHUNK = 500


class DeviceConnector(Protocol):
    """The simulator's device side: ``ApnsSimulator`` and ``SimulatorThread`` both provide it."""

    def device_connected(self, token_hex: str) -> AcceptedPush | None: ...


@dataclass(frozen=True, slots=True)
class FleetParams:
    """Device timings, in simulated milliseconds."""

    #: From receiving a push to the command poll (mdmd waking up and connecting).
    checkin_delay_ms: int = 500
    #: Race devices listen this long after their TokenUpdate (Apple saw up to 0.7 s).
    race_window_ms: int = 700
    #: A restored device sends its new token this long after the first push to its old one.
    restore_update_delay_ms: int = 5_000
    #: Push-magic self-healing window (25 h in the seed).
    self_heal_after_ms: int = SELF_HEAL_AFTER_MS
    #: How much earlier a stale duplicate record's check-ins are stamped (it is the older one).
    stale_enrollment_age_ms: int = 3_600_000


@dataclass(slots=True)
class FleetStats:
    """Fleet-wide counters (per-device ones live on :class:`SimDevice`)."""

    #: Pushes by what became of them (:class:`Reception` values).
    receptions: Counter[str] = field(default_factory=Counter)
    #: Check-ins sent, by raw message type (Authenticate, TokenUpdate, CheckOut, Idle).
    checkins: Counter[str] = field(default_factory=Counter)
    #: deliver() answered "offline": the simulator stored the push.
    refused_offline: int = 0
    #: Pushes to tokens no device has (accepted by APNs, received by nobody).
    unknown_token: int = 0

    @property
    def checkins_sent(self) -> int:
        return sum(self.checkins.values())

    @property
    def wrong_magic(self) -> int:
        return self.receptions[Reception.WRONG_MAGIC.value] + self.self_heals

    @property
    def self_heals(self) -> int:
        return self.receptions[Reception.SELF_HEAL.value]


class Fleet:
    """Simulated devices behind the APNs simulator (implements ``DeviceGateway``).

    Usage: ``fleet.add(devices)``, ``ApnsSimulator.run_in_thread(config, gateway=fleet)``,
    ``fleet.attach(sim)``, ``with fleet: fleet.enroll(devices)``. Thread-safe methods say so;
    the rest belong to the scheduler thread.
    """

    def __init__(
        self, clock: Clock, sink: CheckinSink, params: FleetParams | None = None
    ) -> None:
        self.clock = clock
        self.sink = sink
        self.params = params or FleetParams()
        self.scheduler = Scheduler(clock)
        self._by_token: dict[str, SimDevice] = {}
        self._connector: DeviceConnector | None = None
        self._stats = FleetStats()
        self._gateway_lock = threading.Lock()
        #: Check-ins made but not yet delivered (``held_poll`` devices), oldest first.
        self._held: list[tuple[SimDevice, dict[str, Any]]] = []

    # -- setup (any thread, before pushes to the added devices) ------------------------------

    def add(self, devices: Iterable[SimDevice]) -> None:
        """Register devices and every token APNs knows for them."""
        for device in devices:
            for token in device.tokens:
                if token in self._by_token:
                    raise ValueError(f"token {token[:8]}… belongs to two devices")
                self._by_token[token] = device

    def attach(self, connector: DeviceConnector) -> None:
        """The simulator to tell when a device comes online (to get its stored push)."""
        self._connector = connector

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- DeviceGateway (simulator loop thread; quick, never blocks) ---------------------------

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        device = self._by_token.get(token_hex)
        if device is None:
            return STATUS_UNKNOWN
        return STATUS_ACTIVE if device.topic == topic else STATUS_OTHER_TOPIC

    def deliver(self, push: AcceptedPush) -> bool:
        device = self._by_token.get(push.token_hex)
        if device is None:
            with self._gateway_lock:
                self._stats.unknown_token += 1
            return True  # nobody listens on it: APNs's 200 leads nowhere
        if not device.online:
            with self._gateway_lock:
                self._stats.refused_offline += 1
            return False
        self.scheduler.call_soon(partial(self._received, device, push, self.clock.now_ms()))
        return True

    # -- commands (thread-safe) ---------------------------------------------------------------

    def enroll(self, devices: Sequence[SimDevice], timeout_s: float = 120.0) -> None:
        """Enroll ``devices`` (their check-ins are acknowledged by the sink when this returns)."""
        for start in range(0, len(devices), _ENROLL_CHUNK):
            chunk = devices[start : start + _ENROLL_CHUNK]
            self.scheduler.run_sync(partial(self._enroll_all, chunk), timeout_s)
        self.sink.flush(timeout_s)

    def release_held(self, timeout_s: float = 30.0) -> int:
        """Deliver the check-ins held back since enrollment, with their original (older)
        stamps; returns how many (acknowledged by the sink on return)."""

        def release() -> int:
            held, self._held = self._held, []
            for device, event in held:
                self._send(device, event)
            return len(held)

        released = self.scheduler.run_sync(release, timeout_s)
        self.sink.flush(timeout_s)
        return released

    def go_online(self, device: SimDevice) -> None:
        self.scheduler.call_soon(partial(self._set_online, device, True))

    def go_offline(self, device: SimDevice) -> None:
        self.scheduler.call_soon(partial(self._set_online, device, False))

    def schedule_online(self, device: SimDevice, at_ms: int) -> None:
        """Bring ``device`` online at simulated time ``at_ms``."""
        self.scheduler.call_at(at_ms, partial(self._set_online, device, True))

    def unenroll(self, device: SimDevice, checkout: bool) -> None:
        """Remove the MDM profile; ``checkout=False``: the one CheckOut attempt is lost."""
        self.scheduler.call_soon(partial(self._unenroll, device, checkout))

    def stats(self) -> FleetStats:
        """A consistent copy of the counters."""

        def copy() -> FleetStats:
            with self._gateway_lock:
                s = self._stats
                return FleetStats(Counter(s.receptions), Counter(s.checkins),
                                  s.refused_offline, s.unknown_token)

        return self.scheduler.run_sync(copy)

    # -- device behaviour (scheduler thread) --------------------------------------------------

    def _send(self, device: SimDevice, event: dict[str, Any]) -> None:
        self.sink.send(event)
        device.checkins_sent += 1
        self._stats.checkins[event["raw_message_type"]] += 1

    def _enroll_all(self, devices: Sequence[SimDevice]) -> None:
        for device in devices:
            self._enroll(device)

    def _enroll(self, device: SimDevice) -> None:
        now = self.clock.now_ms()
        stale = device.stale_enrollment  # enrolled earlier; its CheckOut was lost
        if stale is not None and not device.stale_delivered_last:
            self._send_enrollment(device, stale, now - self.params.stale_enrollment_age_ms)
        self._send_enrollment(device, device.enrollment, now)
        if stale is not None and device.stale_delivered_last:
            self._send_enrollment(device, stale, now - self.params.stale_enrollment_age_ms)
        device.enrolled_at(now)
        if device.held_poll:
            self._held.append((device, events.idle_report(device.enrollment, now)))
        after = device.after_enroll
        if after is AfterEnroll.GO_OFFLINE:
            device.online = False
            if device.offline_for_ms is not None:
                self.scheduler.schedule(
                    now + device.offline_for_ms, partial(self._set_online, device, True)
                )
        elif after is AfterEnroll.UNENROLL_CHECKOUT:
            self._unenroll(device, checkout=True)
        elif after in (AfterEnroll.UNENROLL_SILENT, AfterEnroll.WIPE):
            self._unenroll(device, checkout=False)

    def _send_enrollment(self, device: SimDevice, enrollment: events.Enrollment,
                         at_ms: int) -> None:
        self._send(device, events.authenticate(enrollment, at_ms))
        self._send(device, events.token_update(enrollment, at_ms))

    def _unenroll(self, device: SimDevice, checkout: bool) -> None:
        device.enrolled = False
        if checkout:
            self._send(device, events.check_out(device.enrollment, self.clock.now_ms()))

    def _set_online(self, device: SimDevice, online: bool) -> None:
        was = device.online
        device.online = online
        if online and not was and self._connector is not None:
            # Calls deliver() on this thread, which queues the push behind this callback.
            self._connector.device_connected(device.token_hex)

    def _received(self, device: SimDevice, push: AcceptedPush, at_ms: int) -> None:
        reception = device.on_push(
            push.token_hex, push.push_magic, at_ms, self.params.self_heal_after_ms
        )
        self._stats.receptions[reception.value] += 1
        if reception is Reception.ANSWERED:
            if not device.checkin_pending:  # several pushes before the poll: one poll
                device.checkin_pending = True
                delay = device.checkin_delay_ms
                self.scheduler.schedule(
                    at_ms + (self.params.checkin_delay_ms if delay is None else delay),
                    partial(self._poll, device),
                )
        elif reception is Reception.SELF_HEAL:
            self.scheduler.schedule(
                at_ms + self.params.checkin_delay_ms, partial(self._self_heal, device)
            )
        elif reception is Reception.RESTORE_NOTICED:
            self.scheduler.schedule(
                at_ms + self.params.restore_update_delay_ms, partial(self._report_token, device)
            )

    def _poll(self, device: SimDevice) -> None:
        device.checkin_pending = False
        if device.enrolled and device.online:
            now = self.clock.now_ms()
            report = events.idle_report(device.enrollment, now)
            if device.poll_delivered_after_ms:
                self.scheduler.schedule(now + device.poll_delivered_after_ms,
                                        partial(self._send, device, report))
            else:
                self._send(device, report)

    def _self_heal(self, device: SimDevice) -> None:
        if device.enrolled and device.online:
            now = self.clock.now_ms()
            self._send(device, events.token_update(device.enrollment, now))
            self._send(device, events.idle_report(device.enrollment, now))

    def _report_token(self, device: SimDevice) -> None:
        if not device.enrolled:
            return
        if not device.online:  # the device repeats its TokenUpdate until it succeeds
            self.scheduler.schedule(
                self.clock.now_ms() + self.params.restore_update_delay_ms,
                partial(self._report_token, device),
            )
            return
        enrollment = device.report_new_token()
        self._send(device, events.token_update(enrollment, self.clock.now_ms()))
