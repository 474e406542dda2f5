"""The faults themselves: each is a callable the harness calls mid-run; it injects the fault,
heals it (or lets the supervisor do so) and returns the sampler time at which it ended."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from services.devstack.kafka import LocalKafka
from services.devstack.pipeline import Pipeline
from services.devstack.procs import wait_for
from services.devstack.service_process import ServiceProcess
from services.sim.apns.faults import Faults
from tests.faults.harness import Sampler, frozen

Fault = Callable[[Sampler], float]

#: Longer than the consumers' group session timeout (10 s, services/common/settings.py): the
#: group coordinator declares a frozen member dead and hands its partitions over.
FREEZE_S = 14.0
#: A killed broker stays down this long: past ZooKeeper's session timeout (6 s), after which
#: a broker with the same id may register again, as after a real crash and reschedule.
BROKER_DOWN_S = 8.0
#: How long an APNs storm lasts.
STORM_S = 5.0


def kill_service(pick: Callable[[], ServiceProcess | None]) -> Fault:
    """SIGKILL; the supervisor starts a new process at once (a pod restart)."""
    def fault(sampler: Sampler) -> float:
        proc = pick()
        assert proc is not None and proc.pid is not None
        sampler.supervisor.planned(proc.name)
        os.kill(proc.pid, signal.SIGKILL)
        return sampler.now()
    return fault


def freeze_service(pick: Callable[[], ServiceProcess | None]) -> Fault:
    """SIGSTOP for longer than the session timeout, then SIGCONT."""
    def fault(sampler: Sampler) -> float:
        proc = pick()
        assert proc is not None and proc.pid is not None
        with frozen(proc.pid):
            time.sleep(FREEZE_S)
        return sampler.now()
    return fault


def kill_broker(kafka: LocalKafka) -> Fault:
    """SIGKILL the broker, keep it down, start it again on the same data directory; the fault
    ends when the broker answers again (its own start, log recovery included, is not the
    services' recovery)."""
    def fault(sampler: Sampler) -> float:
        pid = kafka.status().broker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: kafka.status().broker_pid is None, 30)
        time.sleep(BROKER_DOWN_S)
        started = sampler.now()
        kafka.up(timeout_s=180)
        end = sampler.now()
        print(f"broker restarted: answering {end - started:.1f} s after its start")
        return end
    return fault


def freeze_broker(kafka: LocalKafka) -> Fault:
    """SIGSTOP the broker past the group session timeout, then SIGCONT."""
    def fault(sampler: Sampler) -> float:
        pid = kafka.status().broker_pid
        assert pid is not None
        with frozen(pid):
            time.sleep(FREEZE_S)
        return sampler.now()
    return fault


def storm(faults: Faults, **during: object) -> Fault:
    """Set these Faults fields for STORM_S, then put the previous values back."""
    def fault(sampler: Sampler) -> float:
        before = {name: getattr(faults, name) for name in during}
        for name, value in during.items():
            setattr(faults, name, value)
        time.sleep(STORM_S)
        for name, value in before.items():
            setattr(faults, name, value)
        return sampler.now()
    return fault


def revoke_then_renew(faults: Faults, pipeline: Pipeline) -> Fault:
    """APNs refuses the certificate (403 BadCertificate) for a while, then takes it again, as
    after a revocation and the upload of a renewed certificate."""
    def fault(sampler: Sampler) -> float:
        topics = set(pipeline.spec.certificates)
        faults.revoke(topics=topics)
        time.sleep(STORM_S)
        faults.revoked_topics = faults.revoked_topics - topics
        return sampler.now()
    return fault
