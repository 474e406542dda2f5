"""Publish push policies (throttle, scope, shards, attempts) to the compacted config topic.

This is Afaria's "APNS throttle" settings page as an event: one PushPolicy record per certificate
(or '*' for the default), keyed by certificate, so the topic keeps the latest. Senders and the
fan-out apply a change within the minute, without restart; a tombstone removes a certificate's
own policy and the default applies again.
"""

from __future__ import annotations

from services.common.limits import InvalidInput, check_topic
from services.common.policy import DEFAULT_CERTIFICATE, PushPolicy
from services.sdk.publisher import InvalidRequest, KafkaPublisher

__all__ = ["DEFAULT_CERTIFICATE", "InvalidRequest", "PolicyPublisher", "PushPolicy"]


def check_certificate(certificate: str) -> str:
    """A policy's key: a push topic (the certificate's), or '*' for the default policy."""
    if certificate == DEFAULT_CERTIFICATE:
        return certificate
    try:
        return check_topic(certificate)
    except InvalidInput as exc:
        raise InvalidRequest("certificate", f"a push topic or {DEFAULT_CERTIFICATE!r}: "
                             f"{exc.reason}") from None


class PolicyPublisher(KafkaPublisher):
    """Writes PushPolicy records (and tombstones) to mdm.push.config.v1, acknowledged."""

    topic_name = "config"

    def set(self, policy: PushPolicy) -> None:
        """Publish `policy` (ValueError with the reason if it is out of range; InvalidRequest,
        a ValueError, if its certificate is not a push topic)."""
        check_certificate(policy.certificate)
        value = self.serde.encode("PushPolicy", policy.to_record(), self.topic)
        self.producer.produce_sync(self.topic, value, key=policy.certificate)

    def clear(self, certificate: str) -> None:
        """Remove the certificate's own policy (a tombstone): the default applies again."""
        check_certificate(certificate)
        self.producer.produce_sync(self.topic, None, key=certificate)
