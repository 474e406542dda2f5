"""The one owner of partition pause state: why each partition is paused, and when it may resume.

Two rules pause a partition for different reasons and lift them at different times: the lane
buffer is full (lifted when half of it has drained) and the head of a retry tier is not due yet
(lifted at its due time). A partition may be paused for both at once; resuming it when one
reason goes while the other holds would either overfill the buffer or read a retry early (and
then pause, seek and re-read it again). So every pause and resume goes through here, with its
reason, and the consumer is resumed only when no reason is left.
"""

from __future__ import annotations

from enum import StrEnum

from services.common.kafka.io import KafkaIO, Partition


class PauseReason(StrEnum):
    BUFFER_FULL = "buffer_full"
    """The partition holds as many waiting jobs as the lane buffer allows."""
    RETRY_NOT_DUE = "retry_not_due"
    """The head of a retry tier partition is not due yet (it was sought back to)."""


class PartitionPauses:
    """Pause reasons per partition; pauses and resumes the consumer on the transitions only."""

    def __init__(self, io: KafkaIO) -> None:
        self._io = io
        self._reasons: dict[Partition, set[PauseReason]] = {}

    def pause(self, partition: Partition, reason: PauseReason) -> None:
        """Add `reason`; the consumer is paused if it was not already."""
        reasons = self._reasons.get(partition)
        if reasons is None:
            self._reasons[partition] = {reason}
            self._io.pause([partition])
        else:
            reasons.add(reason)

    def release(self, partition: Partition, reason: PauseReason) -> None:
        """Lift `reason`; the consumer resumes once no other reason holds the partition."""
        reasons = self._reasons.get(partition)
        if reasons is None or reason not in reasons:
            return
        reasons.discard(reason)
        if not reasons:
            del self._reasons[partition]
            self._io.resume([partition])

    def is_paused(self, partition: Partition, reason: PauseReason | None = None) -> bool:
        """Paused at all (reason None), or for `reason`."""
        reasons = self._reasons.get(partition)
        return bool(reasons) if reason is None else reasons is not None and reason in reasons

    def reasons(self, partition: Partition) -> frozenset[PauseReason]:
        return frozenset(self._reasons.get(partition, ()))

    def count(self, reason: PauseReason) -> int:
        """Partitions paused for `reason` (for the metrics)."""
        return sum(reason in reasons for reasons in self._reasons.values())

    def forget(self, partition: Partition) -> None:
        """The partition was taken away: a new assignment starts unpaused. librdkafka keeps a
        partition paused through a rebalance, also when it is assigned back to this member, so
        one paused here is resumed now: else nothing would ever lift that pause, and the
        partition would not be read again by this sender."""
        if self._reasons.pop(partition, None) is not None:
            self._io.resume([partition])
