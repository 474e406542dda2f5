"""The faults themselves: each is a callable the harness calls mid-run; it injects the fault,
heals it (or lets the supervisor do so) and returns the sampler time at which it ended."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from services.common.admin import admin_client, create_topics
from services.common.catalogue import DLQ
from services.devstack.kafka import LocalKafka
from services.devstack.pipeline import Pipeline
from services.devstack.procs import wait_for
from services.devstack.service_process import ServiceProcess
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.faults import Faults
from tests.faults import poison
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
#: How long the dead-letter topic stays deleted while poison arrives: past librdkafka's 30 s
#: wait for an unknown topic's metadata (topic.metadata.propagation.max.ms) and the services'
#: 30 s flush timeouts, so each meets the refusal and not only a slow write.
DLQ_GONE_S = 40.0
#: The priority jobs topic's max.message.bytes during the size fault: an MDM job (~500 bytes)
#: fits, an APS job carrying 2,200 random bytes of payload does not.
SMALL_TOPIC_BYTES = 1000
#: Oversize requests published during the size fault, and targets each.
OVERSIZE_REQUESTS = 3
OVERSIZE_TARGETS = 5


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


@dataclass
class Written:
    """What a record fault wrote, for the case's checks afterwards."""

    #: (topic, partition, offset) of each poison record -> the services that must dead-letter it.
    poison: dict[poison.Source, frozenset[str]] = field(default_factory=dict)
    #: Oversize requests: request id -> targets.
    oversize: dict[str, list[str]] = field(default_factory=dict)


def _topic_config(pipeline: Pipeline, topic: str, name: str, value: str | None) -> None:
    """Set (or, with None, delete back to the broker's default) one topic config."""
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value or "", incremental_operation=op)])
    admin = admin_client(pipeline.kafka)  # held: a collected client fails its futures
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def records_over_the_size_limit(pipeline: Pipeline, tenant: str, ids: list[str],
                                written: Written) -> Fault:
    """Records Kafka will not take, on every path: the priority jobs topic's limit lowered under
    the size of the jobs of a few APS requests (the fan-out must dead-letter each request with
    the reason and go on), and a poison record near the broker's 1 MB limit on every consumed
    topic (each reader must dead-letter it, its DLQ copy too large to keep the value). The fault
    ends when the fan-out has dead-lettered every oversize request; the limit is then lifted."""
    def fault(sampler: Sampler) -> float:
        topics = pipeline.topics
        _topic_config(pipeline, topics.jobs_priority, "max.message.bytes",
                      str(SMALL_TOPIC_BYTES))
        publisher = PushPublisher(pipeline.kafka)
        for n in range(OVERSIZE_REQUESTS):
            # Random bytes: lz4 cannot shrink the job under the topic's limit; the payload stays
            # within the 4,096 bytes a request may carry (services/common/limits.py).
            blob = base64.b64encode(os.urandom(1_650)).decode()
            targets = ids[n * OVERSIZE_TARGETS:(n + 1) * OVERSIZE_TARGETS]
            request_id = publisher.publish(PushRequest(
                tenant=tenant, enrollment_ids=targets, initiator="user", kind="aps",
                aps_payload=json.dumps({"aps": {"blob": blob}})))
            written.oversize[request_id] = targets
        written.poison.update(poison.write_poison(pipeline.kafka, poison.NEAR_LIMIT))
        try:
            assert wait_for(lambda: written.oversize.keys() <= set(poison.dead_lettered_requests(
                pipeline.kafka)), 180, interval_s=1.0), "oversize requests not dead-lettered"
        finally:
            _topic_config(pipeline, topics.jobs_priority, "max.message.bytes", None)
        return sampler.now()
    return fault


def dead_letter_topic_deleted(pipeline: Pipeline, written: Written) -> Fault:
    """The DLQ topic deleted (on a broker that does not create topics on a write) while a poison
    record arrives on every consumed topic; an operator creates it again DLQ_GONE_S later. The
    fault ends when the topic is back."""
    def fault(sampler: Sampler) -> float:
        dlq = pipeline.topics.dlq
        admin = admin_client(pipeline.kafka)
        for future in admin.delete_topics([dlq], operation_timeout=30).values():
            future.result(60)
        assert wait_for(lambda: dlq not in admin.list_topics(timeout=10).topics, 60)
        written.poison.update(poison.write_poison(pipeline.kafka, 200))
        time.sleep(DLQ_GONE_S)
        assert dlq in create_topics(pipeline.kafka, [DLQ],
                                    partitions_override=pipeline.spec.partitions)
        print(f"the DLQ topic {dlq} created again")
        return sampler.now()
    return fault
