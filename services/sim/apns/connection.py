"""One client connection to the simulator: a small HTTP/2 server (RFC 9113) over asyncio TLS.

This module is framing only. It hands every complete request to a :class:`RequestHandler`
(the simulator) and sends whatever answer the handler gives back through
:meth:`ApnsConnection.respond`, now or later; which answer, which fault and what gets counted
are the handler's business. The handler may also drop the connection (:meth:`~ApnsConnection.
abort`) or ask for a graceful GOAWAY (:meth:`~ApnsConnection.drain`).

The simulator's own frame layer rather than h2's: h2 spends ~100 µs of pure Python per request
(an event object per frame, a stream state machine, a scan of every open stream per new stream,
generic HPACK), which made the simulator, not the client, the bottleneck of every benchmark.
Here one ``data_received`` call walks the frames in the buffer directly, decodes header blocks
with :class:`services.sim.apns.hpack_fast.FastDecoder`, writes answers from pre-encoded bytes,
and sends everything it produced in one ``transport.write``.

What the server side of HTTP/2 needs, and nothing more:

- SETTINGS (MAX_CONCURRENT_STREAMS, a 1 MiB stream window, MAX_HEADER_LIST_SIZE) and a 16 MiB
  connection window up front; SETTINGS and PING acknowledged; GOAWAY from the client closes.
- Receive flow control: every DATA byte is handed back with WINDOW_UPDATE once half a window
  has been consumed (connection and stream), so a client never stalls on the simulator. The
  client's own overruns are not policed.
- Send flow control for the only DATA the simulator sends, error bodies: a body waits for the
  client's connection and stream windows (INITIAL_WINDOW_SIZE and WINDOW_UPDATE honoured).
- A stream over MAX_CONCURRENT_STREAMS gets RST_STREAM(REFUSED_STREAM) instead of a connection
  error (RFC 9113 §5.1.2, as APNs does): a client may open streams before it has read the
  SETTINGS (libcurl does). Its header block is still decoded (the HPACK context must stay in
  step) and its DATA discarded.
- A 200 is one HEADERS frame with END_STREAM and no DATA frame, as real APNs sends (aioapns
  breaks on a DATA frame after a 200); an error is HEADERS then the JSON body with END_STREAM.
- Malformed input (bad preface, oversized or malformed frames, HPACK errors, CONTINUATION out
  of place) ends the connection with GOAWAY and the matching error code.

Every connection is HTTP/2 whatever ALPN said: aioapns offers no ALPN at all and real APNs
tolerates that.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from typing import Protocol, cast

from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError

from services.sim.apns.hpack_fast import FastDecoder

__all__ = ["Answer", "ApnsConnection", "Headers", "PeerIdentity", "RequestHandler"]

log = logging.getLogger(__name__)

#: An answer: status line value, apns-id, body (empty for 200).
Answer = tuple[bytes, bytes, bytes]
#: A request's decoded header fields, in order.
Headers = list[tuple[bytes, bytes]]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Frame header: length as 16 + 8 bits, type, flags, stream id (RFC 9113 §4.1).
_FRAME = struct.Struct(">HBBBL")
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY_FRAME, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

#: Our limits. Connection-level receive window: large, so a burst of many streams never stalls.
_MAX_FRAME_SIZE = 16384
_CONNECTION_WINDOW = 16 * 1024 * 1024
_STREAM_WINDOW = 1024 * 1024
_MAX_HEADER_LIST_SIZE = 16384
_MAX_WINDOW = 2**31 - 1
_GOAWAY_DEBUG = b'{"reason":"Shutdown"}'
_GOAWAY_LINGER_S = 1.0

#: HPACK static-table indices of the statuses APNs answers with (RFC 7541, appendix A).
_STATIC_STATUS = {b"200": b"\x88", b"400": b"\x8c", b"404": b"\x8d", b"500": b"\x8e"}
#: Literal header field, never indexed, new name (RFC 7541, 6.2.3): the answers use no table.
_APNS_ID_LITERAL = b"\x10\x07apns-id"
_UNIQUE_ID_LITERAL = b"\x10\x0eapns-unique-id"
_OK_HEAD = b"\x88" + _APNS_ID_LITERAL
_SETTINGS_ACK = _FRAME.pack(0, 0, _SETTINGS, _ACK, 0)


def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def _preamble(max_concurrent_streams: int) -> bytes:
    """Our SETTINGS (the values h2 used to send) and the connection window increase."""
    settings = (
        (0x1, 4096),  # HEADER_TABLE_SIZE
        (0x2, 0),  # ENABLE_PUSH
        (0x4, _STREAM_WINDOW),  # INITIAL_WINDOW_SIZE
        (0x5, _MAX_FRAME_SIZE),  # MAX_FRAME_SIZE
        (0x8, 0),  # ENABLE_CONNECT_PROTOCOL
        (0x3, max_concurrent_streams),  # MAX_CONCURRENT_STREAMS
        (0x6, _MAX_HEADER_LIST_SIZE),  # MAX_HEADER_LIST_SIZE
    )
    payload = b"".join(_SETTING.pack(k, v) for k, v in settings)
    return _frame(_SETTINGS, 0, 0, payload) + _frame(
        _WINDOW_UPDATE, 0, 0, _U32.pack(_CONNECTION_WINDOW - 65535)
    )


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with the high bits of its first byte set to ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _ConnectionError(Exception):
    def __init__(self, code: ErrorCodes, message: str) -> None:
        super().__init__(message)
        self.code = code


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


class RequestHandler(Protocol):
    """What the framing layer needs from whoever decides the answers (the simulator)."""

    def connection_opened(self, conn: ApnsConnection) -> None:
        """A TLS connection is up (its :attr:`~ApnsConnection.peer` is known)."""

    def connection_closed(self, conn: ApnsConnection) -> None:
        """The connection is gone; nothing sent to it any more arrives."""

    def request(self, conn: ApnsConnection, sid: int, headers: Headers, body: bytes) -> None:
        """A complete request on stream ``sid``.

        Must lead to exactly one ``conn.respond(sid, answer)``, now or later (a delayed answer
        runs on the loop), unless the handler aborts the connection instead."""

    def stream_refused(self, conn: ApnsConnection) -> None:
        """A stream was reset with REFUSED_STREAM (over MAX_CONCURRENT_STREAMS): never handed
        to :meth:`request`."""


class _Stream:
    """A request whose body is still arriving."""

    __slots__ = ("body", "headers", "unacked")

    def __init__(self, headers: Headers) -> None:
        self.headers = headers
        self.body = b""
        self.unacked = 0


class ApnsConnection(asyncio.Protocol):
    """The HTTP/2 server side of one TLS connection; its handler decides every answer."""

    def __init__(self, handler: RequestHandler, max_concurrent_streams: int,
                 send_unique_id: bool = False) -> None:
        self._handler = handler
        self._send_unique_id = send_unique_id
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decoder = FastDecoder(max_allowed_table_size=4096)
        self._out: list[bytes] = []
        self._buf = b""
        self._preface_seen = False
        #: A header block waiting for CONTINUATION: stream id, HEADERS flags, fragments.
        self._continued: tuple[int, int, list[bytes]] | None = None
        #: Requests whose body is still arriving.
        self._streams: dict[int, _Stream] = {}
        #: Streams not closed yet (receiving, being answered, body waiting for the window):
        #: what MAX_CONCURRENT_STREAMS limits.
        self._active: set[int] = set()
        self._last_sid = 0
        self._max_streams = max_concurrent_streams
        self._recv_unacked = 0
        #: Send flow control (error bodies only): connection window, the client's initial
        #: stream window, and per-stream WINDOW_UPDATE increments.
        self._send_window = 65535
        self._peer_initial_window = 65535
        self._send_delta: dict[int, int] = {}
        self._blocked: dict[int, bytes] = {}
        #: HEADER_TABLE_SIZE the client allows our encoder; a change is announced (RFC 7541
        #: §4.2) at the start of our next header block.
        self._encoder_table_size = 4096
        self._table_update = b""
        self.peer = PeerIdentity(None, None)
        #: Requests handed to the handler so far (the GOAWAY fault counts them).
        self.requests = 0
        #: Requests handed over and not answered yet (a drain waits for them).
        self._unanswered = 0
        #: Inside data_received: answers are collected and sent in one write at its end.
        self._receiving = False
        self._drain_after: int | None = None
        self._closing = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self.peer = PeerIdentity.from_peercert(transport.get_extra_info("peercert"))
        transport.write(_preamble(self._max_streams))
        self._handler.connection_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = None
        self._handler.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        self._receiving = True
        try:
            if not self._preface_seen:
                if len(data) < len(_PREFACE):
                    if not _PREFACE.startswith(data):
                        raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "invalid preface")
                    self._buf = data
                    return
                if not data.startswith(_PREFACE):
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "invalid preface")
                self._preface_seen = True
                data = data[len(_PREFACE) :]
            self._frames(data)
        except _ConnectionError as exc:
            log.debug("closing connection on protocol error: %s", exc)
            self._send_goaway(self._last_sid, exc.code)
            self._flush()
            self.close()
            return
        finally:
            self._receiving = False
        if not self._closing:
            self._flush()

    # -- frames -----------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        """Handle every complete frame in ``data``; keep the incomplete tail for later."""
        unpack = _FRAME.unpack_from
        streams = self._streams
        end = len(data)
        pos = 0
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = unpack(data, pos)
            length = (hi << 8) | lo
            if length > _MAX_FRAME_SIZE:
                raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "frame too large")
            start = pos + 9
            stop = start + length
            if stop > end:
                break
            pos = stop
            sid &= 0x7FFFFFFF
            if self._continued is not None and ftype != _CONTINUATION:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "CONTINUATION expected")
            if ftype == _DATA:
                # Receive window first: discarded DATA is handed back too.
                self._recv_unacked += length
                if self._recv_unacked >= _CONNECTION_WINDOW // 2:
                    self._out.append(_frame(_WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked)))
                    self._recv_unacked = 0
                st = streams.get(sid)
                if st is None:
                    if sid == 0 or sid > self._last_sid:
                        raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "DATA on idle stream")
                    continue  # a closed, reset or refused stream: discarded
                payload = data[start:stop]
                if flags & _PADDED:
                    payload = self._unpad(payload)
                if payload:
                    st.body += payload
                if flags & _END_STREAM:
                    del streams[sid]
                    self._request(sid, st.headers, st.body)
                    if self._closing:
                        return
                else:
                    st.unacked += length
                    if st.unacked >= _STREAM_WINDOW // 2:
                        self._out.append(_frame(_WINDOW_UPDATE, 0, sid, _U32.pack(st.unacked)))
                        st.unacked = 0
            elif ftype == _HEADERS:
                if sid == 0:
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "HEADERS on stream 0")
                payload = data[start:stop]
                if flags & _PADDED:
                    payload = self._unpad(payload)
                if flags & _PRIORITY_FLAG:
                    if len(payload) < 5:
                        raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "short HEADERS")
                    payload = payload[5:]
                if flags & _END_HEADERS:
                    self._header_block(sid, flags, payload)
                    if self._closing:
                        return
                else:
                    self._continued = (sid, flags, [payload])
            elif ftype == _CONTINUATION:
                continued = self._continued
                if continued is None or continued[0] != sid:
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "unexpected CONTINUATION")
                continued[2].append(data[start:stop])
                if flags & _END_HEADERS:
                    self._continued = None
                    self._header_block(sid, continued[1], b"".join(continued[2]))
                    if self._closing:
                        return
            elif ftype == _WINDOW_UPDATE:
                self._window_update(sid, data[start:stop])
            elif ftype == _SETTINGS:
                self._settings(sid, flags, data[start:stop])
            elif ftype == _RST_STREAM:
                if sid == 0 or length != 4:
                    raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "malformed RST_STREAM")
                streams.pop(sid, None)
                self._close_stream(sid)
            elif ftype == _PING:
                if sid != 0 or length != 8:
                    raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "malformed PING")
                if not flags & _ACK:
                    self._out.append(_frame(_PING, _ACK, 0, data[start:stop]))
            elif ftype == _GOAWAY_FRAME:
                self._flush()
                self.close()
                return
            elif ftype == _PUSH_PROMISE:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # PRIORITY and unknown frame types are ignored (RFC 9113 §5.3.2, §5.5).
        self._buf = data[pos:]

    @staticmethod
    def _unpad(payload: bytes) -> bytes:
        if not payload or payload[0] >= len(payload):
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "bad padding")
        return payload[1 : len(payload) - payload[0]]

    def _header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self._decoder.decode(block)
        except HPACKError as exc:
            raise _ConnectionError(ErrorCodes.COMPRESSION_ERROR, str(exc)) from exc
        st = self._streams.get(sid)
        if st is not None:  # trailers: they end the request, their fields are ignored
            if flags & _END_STREAM:
                del self._streams[sid]
                self._request(sid, st.headers, st.body)
            return
        if not sid & 1:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "even stream id from a client")
        if sid <= self._last_sid:
            self._reset(sid, ErrorCodes.STREAM_CLOSED)  # a stream already answered or reset
            return
        self._last_sid = sid
        if len(self._active) >= self._max_streams:
            self._reset(sid, ErrorCodes.REFUSED_STREAM)
            self._handler.stream_refused(self)
            return
        self._active.add(sid)
        if flags & _END_STREAM:
            self._request(sid, headers, b"")
        else:
            self._streams[sid] = _Stream(headers)

    def _settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "SETTINGS ACK with payload")
            return
        if len(payload) % 6:
            raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "malformed SETTINGS")
        for key, value in _SETTING.iter_unpack(payload):
            if key == 0x1:  # HEADER_TABLE_SIZE
                if value != self._encoder_table_size:
                    self._encoder_table_size = value
                    self._table_update = _hpack_int(value, 5, 0x20)
            elif key == 0x2 and value > 1:  # ENABLE_PUSH
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "bad ENABLE_PUSH")
            elif key == 0x4:  # INITIAL_WINDOW_SIZE
                if value > _MAX_WINDOW:
                    raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "window too large")
                self._peer_initial_window = value
            elif key == 0x5 and not _MAX_FRAME_SIZE <= value <= 2**24 - 1:  # MAX_FRAME_SIZE
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
        self._out.append(_SETTINGS_ACK)
        if self._blocked:
            self._send_blocked()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(ErrorCodes.FRAME_SIZE_ERROR, "malformed WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise _ConnectionError(ErrorCodes.PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ConnectionError(ErrorCodes.FLOW_CONTROL_ERROR, "window overflow")
        elif sid in self._active:
            if increment == 0:
                self._streams.pop(sid, None)
                self._reset(sid, ErrorCodes.PROTOCOL_ERROR)
                return
            self._send_delta[sid] = self._send_delta.get(sid, 0) + increment
        if self._blocked:
            self._send_blocked()

    def _reset(self, sid: int, code: ErrorCodes) -> None:
        self._out.append(_frame(_RST_STREAM, 0, sid, _U32.pack(code)))
        self._close_stream(sid)

    def _close_stream(self, sid: int) -> None:
        self._active.discard(sid)
        self._blocked.pop(sid, None)
        if self._send_delta:
            self._send_delta.pop(sid, None)

    # -- requests and answers ---------------------------------------------------------------

    def _request(self, sid: int, headers: Headers, body: bytes) -> None:
        if self._drain_after is not None and sid > self._drain_after:
            return  # arrived after the GOAWAY decision: left unprocessed, the client retries it
        self.requests += 1
        self._unanswered += 1
        self._handler.request(self, sid, headers, body)

    def respond(self, sid: int, answer: Answer) -> None:
        """Send the answer to the request on stream ``sid`` (once per request handed over).

        Inside the handler's :meth:`~RequestHandler.request` call the frames join the others of
        this read, sent in one write; later (a delayed answer) they are written at once."""
        self._unanswered -= 1
        if self._closing:
            return
        self._answer(sid, answer)
        if self._drain_after is not None:
            self._maybe_goaway()
        if not self._receiving:
            self._flush()

    @property
    def draining(self) -> bool:
        """A graceful GOAWAY was asked for (:meth:`drain`)."""
        return self._drain_after is not None

    def drain(self, last_sid: int) -> None:
        """Graceful GOAWAY: no request after ``last_sid`` is handed over; once every request up
        to it has been answered, GOAWAY(last_sid) tells the client to retry the later ones
        elsewhere, and the connection closes. Only the first call counts."""
        if self._drain_after is None:
            self._drain_after = last_sid
            self._maybe_goaway()

    def _answer(self, sid: int, answer: Answer) -> None:
        if sid not in self._active:
            return  # the client reset the stream while the answer was delayed
        status, apns_id, body = answer
        if status == b"200":
            block = _OK_HEAD + bytes((len(apns_id),)) + apns_id
            if self._send_unique_id:
                unique = str(uuid.uuid4()).encode()
                block += _UNIQUE_ID_LITERAL + bytes((len(unique),)) + unique
        else:
            head = _STATIC_STATUS.get(status) or b"\x08" + bytes((len(status),)) + status
            block = head + _APNS_ID_LITERAL + bytes((len(apns_id),)) + apns_id
        if self._table_update:
            block = self._table_update + block
            self._table_update = b""
        n = len(block)
        if body:
            self._out.append(_FRAME.pack(n >> 8, n & 0xFF, _HEADERS, _END_HEADERS, sid) + block)
            self._send_body(sid, body)
        else:
            flags = _END_HEADERS | _END_STREAM
            self._out.append(_FRAME.pack(n >> 8, n & 0xFF, _HEADERS, flags, sid) + block)
            self._close_stream(sid)

    def _stream_window(self, sid: int) -> int:
        return min(self._send_window, self._peer_initial_window + self._send_delta.get(sid, 0))

    def _send_body(self, sid: int, body: bytes) -> None:
        """Send an error body, or park it until the client opens its flow-control window."""
        if self._stream_window(sid) < len(body):
            self._blocked[sid] = body
            return
        self._send_window -= len(body)
        self._out.append(_frame(_DATA, _END_STREAM, sid, body))
        self._close_stream(sid)

    def _send_blocked(self) -> None:
        for sid, body in list(self._blocked.items()):
            if self._stream_window(sid) >= len(body):
                del self._blocked[sid]
                self._send_body(sid, body)

    def _maybe_goaway(self) -> None:
        """The drain's GOAWAY, once every request up to its last stream has been answered."""
        drain = self._drain_after
        if drain is None or self._unanswered or self._closing:
            return
        if any(sid <= drain for sid in self._streams):
            return  # a request up to the limit is still arriving: it gets its answer first
        self._goaway(drain)

    def _goaway(self, last_stream_id: int) -> None:
        """Say which streams were processed (the client retries later ones) and hang up."""
        self._send_goaway(last_stream_id, ErrorCodes.NO_ERROR, _GOAWAY_DEBUG)
        self._flush()
        # Leave the closing to the client for a moment: closing a socket with the client's
        # late frames unread makes the kernel send RST, and a client may then lose answers
        # it had not read yet. Meanwhile whatever arrives is discarded.
        self._closing = True
        if self._loop is not None:
            self._loop.call_later(_GOAWAY_LINGER_S, self.close)

    def _send_goaway(self, last_stream_id: int, code: ErrorCodes, debug: bytes = b"") -> None:
        self._out.append(_frame(_GOAWAY_FRAME, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug))

    # -- transport --------------------------------------------------------------------------

    def _flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self._transport is not None:
                self._transport.write(data)

    def close(self) -> None:
        """Close after the written frames are sent (GOAWAY, answers)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once, losing whatever is in flight (e.g. a reset fault)."""
        self._closing = True
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

    def shutdown(self) -> None:
        """Simulator stop: tell the client with GOAWAY, as APNs does before maintenance."""
        if self._closing or self._transport is None:
            return
        self._send_goaway(self._last_sid, ErrorCodes.NO_ERROR)
        self._flush()
        self.close()
