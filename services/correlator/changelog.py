"""The correlator's durable state: a compacted topic of its pending and scheduled pushes.

`<prefix>mdm.correlator.state.v1` has as many partitions as the outcomes topic; the entry of a
push lives in the partition number of its SENT outcome, so whoever owns outcomes partition p
restores state partition p (the Kafka Streams changelog pattern, without Kafka Streams). Key:
the job id; value: the packed `Entry` below, or a tombstone once the verdict is durable.
The value is a private binary format, not Avro: nobody else reads this topic, and it is the
cheapest thing to replay a million of. The runner restores it with the common
`read_to_end` (runner.py).
"""

from __future__ import annotations

import struct

from services.common.catalogue import Cleanup, TopicSpec
from services.correlator.pending import Entry

STATE = TopicSpec("mdm.correlator.state.v1", "correlator entry (binary)", "job id", 12,
                  Cleanup.COMPACT)

#: Version 2 adds the rider's carrier (an eighth text); version 1 entries are still read.
_VERSION = 2
_TEXTS = {1: 7, 2: 8}
_HEAD = struct.Struct(">BBBBqqqq")
_LEN = struct.Struct(">H")
_NULL = 0xFFFF


class CorruptEntry(ValueError):
    """A state record this version cannot read."""


def encode(e: Entry) -> bytes:
    parts = [_HEAD.pack(_VERSION, e.kind, e.flags, e.repush, e.pushed_at,
                        -1 if e.token_updated_at is None else e.token_updated_at,
                        e.due_at, e.repushed_at)]
    for s in (e.enrollment_id, e.request_id, e.tenant, e.topic, e.token_hex, e.push_magic,
              e.apns_id, e.rides_on):
        if s is None:
            parts.append(_LEN.pack(_NULL))
        else:
            raw = s.encode()
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
    return b"".join(parts)


def decode(data: bytes) -> Entry:
    try:
        version, kind, flags, repush, pushed, tua, due, repushed = _HEAD.unpack_from(data)
        if version not in _TEXTS:
            raise CorruptEntry(f"state entry version {version}")
        pos = _HEAD.size
        texts: list[str | None] = []
        for _ in range(_TEXTS[version]):
            (n,) = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            if n == _NULL:
                texts.append(None)
            else:
                texts.append(data[pos:pos + n].decode())
                pos += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptEntry(str(exc)) from exc
    enrollment_id, request_id, tenant = texts[0], texts[1], texts[2]
    if enrollment_id is None or request_id is None or tenant is None:
        raise CorruptEntry("state entry without enrollment, request or tenant")
    return Entry(kind, enrollment_id, request_id, tenant, texts[3], texts[4], texts[5], texts[6],
                 pushed, None if tua < 0 else tua, flags, repush, due, repushed,
                 texts[7] if len(texts) > 7 else None)
