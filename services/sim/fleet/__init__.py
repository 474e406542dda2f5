"""The device half of the simulator: enrollments that answer pushes the way real devices do.

Every failure cause of the Apple seed (offline, unenrolled with or without CheckOut, wiped, wrong
topic, restored token, stale PushMagic with its 25-hour self-healing, the enrollment race) is a
configurable share of a deterministic fleet with ground truth per device. The fleet is the APNs
simulator's :class:`~services.sim.apns.fleet_port.DeviceGateway`; devices check in as Avro
CheckinEvents through a :class:`CheckinSink`, on one scheduler thread in the shared compressible
clock's time.

Modules: :mod:`.scenario` (build a fleet), :mod:`.fleet` (gateway + behaviour), :mod:`.device`
(one device's state machine), :mod:`.scheduler`, :mod:`.sink`, :mod:`.events`, :mod:`.truth`.
"""

from services.sim.fleet.device import AfterEnroll, Reception, SimDevice
from services.sim.fleet.events import Enrollment
from services.sim.fleet.fleet import Fleet, FleetParams, FleetStats
from services.sim.fleet.scenario import Scenario, ScenarioSpec, build_scenario
from services.sim.fleet.sink import CheckinSink, KafkaCheckinSink, RecordingSink
from services.sim.fleet.truth import ANSWERED, Cause, DeviceTruth

__all__ = [
    "ANSWERED",
    "AfterEnroll",
    "Cause",
    "CheckinSink",
    "DeviceTruth",
    "Enrollment",
    "Fleet",
    "FleetParams",
    "FleetStats",
    "KafkaCheckinSink",
    "Reception",
    "RecordingSink",
    "Scenario",
    "ScenarioSpec",
    "SimDevice",
    "build_scenario",
]
