"""The exception hierarchy of the shared plumbing, in one place.

Consumers catch `SerdeError` to route a poison record to the DLQ instead of crashing, and the
CLI catches `LocalKafkaError` to print one clear sentence instead of a traceback.
"""

from __future__ import annotations


class MdmPushError(Exception):
    """Base of every error this project raises on purpose."""


class SerdeError(MdmPushError):
    """A record could not be encoded or decoded; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecodeError(SerdeError):
    """Bytes from Kafka are not a record we can read (unknown magic, unknown schema, truncated)."""


class EncodeError(SerdeError):
    """A record does not match its schema."""


class TopicReadError(MdmPushError):
    """A topic could not be read (missing, or the broker did not answer in time)."""


class LocalKafkaError(MdmPushError):
    """The local Kafka stack could not be installed, started or stopped."""
