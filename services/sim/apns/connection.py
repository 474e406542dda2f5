"""One client connection to the simulator: HTTP/2 (h2, sans-IO) over the asyncio TLS transport.

Speed comes from doing as little as possible per request: h2 header validation and
normalisation are off (:mod:`services.sim.apns.request` checks what APNs checks), headers stay
``bytes``, and all frames produced while handling one ``data_received`` call go out in a single
``transport.write``. Answers to a 200 are a HEADERS frame with END_STREAM and no DATA frame, as
real APNs sends them (aioapns breaks on a DATA frame after a 200).

Every connection is HTTP/2 whatever ALPN said: aioapns offers no ALPN at all and real APNs
tolerates that.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import (
    FlowControlError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import Frame, HeadersFrame

if TYPE_CHECKING:
    from services.sim.apns.server import ApnsSimulator

__all__ = ["ApnsConnection", "PeerIdentity"]

log = logging.getLogger(__name__)

_H2_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
#: Connection-level receive window: large, so a burst of many streams never stalls on it.
_CONNECTION_WINDOW = 16 * 1024 * 1024
_STREAM_WINDOW = 1024 * 1024
_GOAWAY_DEBUG = b'{"reason":"Shutdown"}'

#: An answer: status line value, apns-id, body (empty for 200).
Answer = tuple[bytes, bytes, bytes]

#: HPACK static-table indices of the statuses APNs answers with (RFC 7541, appendix A).
_STATIC_STATUS = {b"200": b"\x88", b"400": b"\x8c", b"404": b"\x8d", b"500": b"\x8e"}
#: Literal header field, never indexed, new name "apns-id" (RFC 7541, 6.2.3).
_APNS_ID_LITERAL = b"\x10\x07apns-id"


class _AnswerEncoder(Encoder):
    """HPACK encoder that writes the simulator's own answers without the generic machinery.

    Every answer is ``:status`` plus a never-indexed ``apns-id``: neither touches the dynamic
    table, so the block is a few concatenated bytes. Generic hpack encoding costs more than
    the rest of answering a push; anything else (or a pending table-size update) goes the
    generic way.
    """

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if not self.header_table.resized and type(headers) is list and len(headers) == 2:
            (name0, status), (name1, apns_id) = headers
            if name0 == b":status" and name1 == b"apns-id" and len(apns_id) < 127:
                head = _STATIC_STATUS.get(status) or b"\x08" + bytes((len(status),)) + status
                return head + _APNS_ID_LITERAL + bytes((len(apns_id),)) + apns_id
        return super().encode(headers, huffman)


class _ServerH2(H2Connection):
    """h2's server side, refusing a stream over MAX_CONCURRENT_STREAMS instead of the connection.

    h2 treats such a HEADERS frame as a connection error and tears everything down. RFC 9113
    §5.1.2 allows (and APNs, like most servers, uses) the stream error REFUSED_STREAM, which
    tells the client the request was not processed and may be retried. It matters because a
    client may open streams before it has read the server's SETTINGS (libcurl does), when it
    cannot know the limit yet. The refused stream's header block still goes through HPACK (the
    decoder's dynamic table must stay in step with the client's encoder), so h2 opens the
    stream with its check bypassed and the stream is reset at once; its events are dropped, so
    the simulator never sees the request. Later DATA on it is discarded by h2 (connection
    window refunded) like DATA on any reset stream.
    """

    def __init__(self, sim: ApnsSimulator) -> None:
        super().__init__(config=_H2_CONFIG)
        self._sim = sim
        self._refusing = False

    @property
    def open_inbound_streams(self) -> int:
        return 0 if self._refusing else super().open_inbound_streams

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except TooManyStreamsError:
            pass  # raised before h2 changed any state
        sid = frame.stream_id
        self._refusing = True
        try:
            frames, events = super()._receive_headers_frame(frame)
        finally:
            self._refusing = False
        self.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
        self._sim.stats.refused_streams += 1
        return frames, [ev for ev in events if getattr(ev, "stream_id", None) != sid]


class PeerIdentity:
    """Who is on the other end: the client certificate's topic (subject UID) and serial."""

    __slots__ = ("serial", "topic")

    def __init__(self, topic: str | None, serial: int | None) -> None:
        self.topic = topic
        self.serial = serial

    @classmethod
    def from_peercert(cls, cert: object) -> PeerIdentity:
        """Read ``ssl.SSLSocket.getpeercert()`` output (``None``/empty without a certificate)."""
        if not isinstance(cert, dict) or not cert:
            return cls(None, None)
        topic = None
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "userId":
                    topic = value
        serial_hex = cert.get("serialNumber")
        return cls(topic, int(serial_hex, 16) if serial_hex else None)


class _Stream:
    __slots__ = ("body", "headers")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = b""


class ApnsConnection(asyncio.Protocol):
    """The HTTP/2 server side of one TLS connection; the simulator decides every answer."""

    def __init__(self, sim: ApnsSimulator) -> None:
        self._sim = sim
        self._conn = _ServerH2(sim)
        self._conn.encoder = _AnswerEncoder()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._blocked: dict[int, bytes] = {}
        self.peer = PeerIdentity(None, None)
        self._handled = 0
        self._in_flight = 0
        self._drain_after: int | None = None
        self._closing = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = PeerIdentity.from_peercert(transport.get_extra_info("peercert"))
        conn = self._conn
        conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self._sim.config.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: 16384,
            },
        )
        conn.initiate_connection()
        conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        transport.write(conn.data_to_send())
        self._sim._connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = None
        self._sim._connection_closed(self)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        try:
            events = conn.receive_data(data)
        except ProtocolError as exc:
            log.debug("closing connection on protocol error: %s", exc)
            self._flush()
            self.close()
            return
        streams = self._streams
        for ev in events:
            if isinstance(ev, DataReceived):
                sid = ev.stream_id
                st = streams.get(sid)
                if st is not None and ev.data:
                    st.body += ev.data
                if ev.flow_controlled_length:
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, RequestReceived):
                streams[ev.stream_id] = _Stream(ev.headers)
            elif isinstance(ev, StreamEnded):
                st = streams.pop(ev.stream_id, None)
                if st is not None:
                    self._request(ev.stream_id, st)
                    if self._closing:
                        return
            elif isinstance(ev, WindowUpdated):
                if self._blocked:
                    self._send_blocked()
            elif isinstance(ev, StreamReset):
                streams.pop(ev.stream_id, None)
                self._blocked.pop(ev.stream_id, None)
            elif isinstance(ev, ConnectionTerminated):
                self._flush()
                self.close()
                return
        self._flush()

    # -- requests ---------------------------------------------------------------------------

    def _request(self, sid: int, st: _Stream) -> None:
        if self._drain_after is not None and sid > self._drain_after:
            return  # arrived after the GOAWAY decision: left unprocessed, the client retries it
        sim = self._sim
        faults = sim.faults
        if faults.any_share:
            fault = faults.decide(sim.rng)
            if fault == "reset":
                sim.stats.resets += 1
                self.abort()
                return
            answer = sim.fault_answer(st.headers, fault) if fault != "none" else None
        else:
            answer = None
        if answer is None:
            answer = sim.answer(self.peer, st.headers, st.body)

        self._handled += 1
        limit = faults.goaway_after_streams
        if limit is not None and self._handled >= limit and self._drain_after is None:
            self._drain_after = sid
        delay = faults.delay_s(sim.rng) if faults.latency_ms or faults.latency_jitter_ms else 0.0
        if delay > 0:
            self._in_flight += 1
            sim.loop.call_later(delay, self._answer_later, sid, answer)
        else:
            self._answer(sid, answer)
            if self._drain_after is not None:
                self._maybe_goaway()

    def _answer_later(self, sid: int, answer: Answer) -> None:
        self._in_flight -= 1
        if self._closing:
            return
        self._answer(sid, answer)
        if self._drain_after is not None:
            self._maybe_goaway()
        self._flush()

    def _answer(self, sid: int, answer: Answer) -> None:
        status, apns_id, body = answer
        headers = [(b":status", status), NeverIndexedHeaderTuple(b"apns-id", apns_id)]
        if status == b"200" and self._sim.config.send_unique_id:
            unique = str(uuid.uuid4()).encode()
            headers.append(NeverIndexedHeaderTuple(b"apns-unique-id", unique))
        try:
            self._conn.send_headers(sid, headers, end_stream=not body)
            if body:
                self._send_body(sid, body)
        except StreamClosedError:
            pass  # the client reset the stream while the answer was delayed

    def _send_body(self, sid: int, body: bytes) -> None:
        """Send an error body, or park it until the client opens its flow-control window."""
        if self._conn.local_flow_control_window(sid) < len(body):
            self._blocked[sid] = body
            return
        self._conn.send_data(sid, body, end_stream=True)

    def _send_blocked(self) -> None:
        for sid, body in list(self._blocked.items()):
            try:
                if self._conn.local_flow_control_window(sid) >= len(body):
                    del self._blocked[sid]
                    self._conn.send_data(sid, body, end_stream=True)
            except (StreamClosedError, FlowControlError):
                self._blocked.pop(sid, None)

    def _maybe_goaway(self) -> None:
        """The GOAWAY fault, once every stream up to the limit has been answered."""
        drain = self._drain_after
        if drain is None or self._in_flight or self._closing:
            return
        if any(sid <= drain for sid in self._streams):
            return  # a request up to the limit is still arriving: it gets its answer first
        self._goaway(drain)

    def _goaway(self, last_stream_id: int) -> None:
        """Say which streams were processed (the client retries later ones) and hang up."""
        self._sim.stats.goaways += 1
        self._conn.close_connection(
            error_code=ErrorCodes.NO_ERROR,
            additional_data=_GOAWAY_DEBUG,
            last_stream_id=last_stream_id,
        )
        self._flush()
        self.close()

    # -- transport --------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def close(self) -> None:
        """Close after the written frames are sent (GOAWAY, answers)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once, losing whatever is in flight (the reset fault)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def shutdown(self) -> None:
        """Simulator stop: tell the client with GOAWAY, as APNs does before maintenance."""
        if self._closing or self._transport is None:
            return
        try:
            self._conn.close_connection(error_code=ErrorCodes.NO_ERROR)
            self._flush()
        except ProtocolError:
            pass
        self.close()
