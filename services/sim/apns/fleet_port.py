"""The port between the APNs simulator and whatever plays the devices (the simulated fleet).

APNs knows two things about a device: whether its token is still valid for a topic, and whether
the device is connected right now. The simulator asks a :class:`DeviceGateway` both questions, so
the fleet can be built and tested on its own and the simulator stays a pure provider-API model.

Threading: the simulator calls :meth:`DeviceGateway.token_status` and
:meth:`DeviceGateway.deliver` on its own event-loop thread, once per accepted request, on the hot
path. Implementations must therefore be quick and must not block (hand work to your own thread or
loop, e.g. with ``loop.call_soon_threadsafe`` or a ``queue.SimpleQueue``). The one exception is a
stored push forwarded by :meth:`ApnsSimulator.device_connected`, which calls ``deliver`` on the
thread that called ``device_connected``.
"""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "STATUS_ACTIVE",
    "STATUS_OTHER_TOPIC",
    "STATUS_UNKNOWN",
    "AcceptAllGateway",
    "AcceptedPush",
    "DeviceGateway",
    "TokenState",
    "TokenStatus",
]


class TokenState(enum.Enum):
    """What APNs knows about a device token for a topic."""

    #: The device registered this token for this topic: the push is accepted (200).
    ACTIVE = "active"
    #: The app/MDM profile was removed or the token rotated: 410 Unregistered with a timestamp.
    UNREGISTERED = "unregistered"
    #: The token belongs to another topic: 400 DeviceTokenNotForTopic.
    OTHER_TOPIC = "other_topic"
    #: Never seen. APNs cannot tell a new token from a bogus one, so by default it is accepted
    #: (200) and stored; the simulator can be configured to answer 400 BadDeviceToken instead.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TokenStatus:
    """A token's state; ``unregistered_at_ms`` (epoch milliseconds) only for UNREGISTERED.

    APNs returns that timestamp with 410 so providers can ignore tokens that were invalidated
    before the device last re-registered.
    """

    state: TokenState
    unregistered_at_ms: int | None = None

    @classmethod
    def unregistered(cls, at_ms: int) -> TokenStatus:
        return cls(TokenState.UNREGISTERED, at_ms)


#: Shared instances, so a gateway answers without allocating on the hot path.
STATUS_ACTIVE = TokenStatus(TokenState.ACTIVE)
STATUS_UNKNOWN = TokenStatus(TokenState.UNKNOWN)
STATUS_OTHER_TOPIC = TokenStatus(TokenState.OTHER_TOPIC)


@dataclass(frozen=True, slots=True)
class AcceptedPush:
    """A push APNs answered 200 for: what a device receives, plus when it stops being deliverable.

    ``expiration`` is the ``apns-expiration`` header in epoch seconds; ``0`` means "deliver now or
    never" (not stored). ``received_at`` is when the simulator accepted it, in epoch seconds of
    the same clock as ``expiration``: the pipeline's (``SimulatorConfig.clock``, real time unless
    compressed).
    """

    apns_id: str
    topic: str
    token_hex: str
    payload: bytes
    priority: int
    expiration: int
    push_type: str
    received_at: float
    collapse_id: str | None = None

    def payload_json(self) -> dict[str, Any]:
        """The payload as a JSON object (the simulator only accepts JSON objects)."""
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise ValueError("payload is not a JSON object")
        return value

    @property
    def push_magic(self) -> str | None:
        """The PushMagic of an MDM push (``{"mdm": "<magic>"}``), else ``None``."""
        magic = self.payload_json().get("mdm")
        return magic if isinstance(magic, str) else None

    def expired(self, now: float) -> bool:
        """Whether store-and-forward must drop it (expiration 0 is never stored at all)."""
        return self.expiration <= now


@runtime_checkable
class DeviceGateway(Protocol):
    """What the simulator needs from the device fleet. See the module doc for threading."""

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        """State of ``token_hex`` (lower-case hex) for ``topic``."""
        ...

    def deliver(self, push: AcceptedPush) -> bool:
        """Hand an accepted push to the device: True if it was connected and took it.

        False means offline: the simulator stores the push (latest per token) until it expires
        or the device connects (:meth:`ApnsSimulator.device_connected`). A device must answer
        True before its ``device_connected`` call: a push refused just before is then offered
        again (a second call for the same push) rather than stored behind the connection.
        """
        ...


class AcceptAllGateway:
    """Every token is active and every device online: the gateway for benchmarks.

    Counts deliveries so a benchmark or test can check that nothing was lost between the HTTP
    answer and the device.
    """

    def __init__(self) -> None:
        self.delivered = 0
        self.last: AcceptedPush | None = None
        self._lock = threading.Lock()

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        return STATUS_ACTIVE

    def deliver(self, push: AcceptedPush) -> bool:
        # A lock because device_connected may call this from another thread; uncontended it
        # costs far less than the HTTP/2 work around it.
        with self._lock:
            self.delivered += 1
            self.last = push
        return True
