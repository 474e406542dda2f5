"""The jobs finished beyond a committed offset, carried in the offset commit's metadata.

A partition's committed offset can only be one past its longest prefix of finished jobs, and
jobs of different certificates share partitions: one throttled or slow certificate holds that
prefix back while the others run ahead. Without more, a crash repeats everything the fast ones
finished meanwhile — minutes of pushes behind a bulk lane throttled to 50/min. So each commit
also says which offsets past it are already finished (as Confluent's Parallel Consumer does),
and the next owner of the partition skips them: a crash repeats only what was in flight or
finished within the last commit interval.

Format: ``d1:`` + base64(zlib(bitmap)), bit *i* (little-endian within each byte) set when offset
``committed + i`` is finished. Kafka bounds commit metadata (``offset.metadata.max.bytes``,
4,096 by default), so an encoding that would not fit keeps only the lowest offsets: the rest
are sent again, which at-least-once allows.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Collection

__all__ = ["MAX_METADATA_CHARS", "decode_marks", "encode_marks", "encode_marks_kept"]

PREFIX = "d1:"
#: Below the broker's default offset.metadata.max.bytes (4,096), leaving room for nothing else.
MAX_METADATA_CHARS = 3_900


def encode_marks(base: int, done: Collection[int], limit: int = MAX_METADATA_CHARS) -> str:
    """Metadata for a commit at ``base`` saying the offsets in ``done`` (all > base) are finished;
    '' when there are none. Keeps the lowest offsets when all would not fit in ``limit``."""
    return encode_marks_kept(base, done, limit)[0]


def encode_marks_kept(base: int, done: Collection[int], limit: int = MAX_METADATA_CHARS
                      ) -> tuple[str, int]:
    """:func:`encode_marks` and how many offsets it kept (the others would be sent again)."""
    offsets = sorted(o for o in done if o > base)
    while offsets:
        text = _encode(base, offsets)
        if len(text) <= limit:
            return text, len(offsets)
        offsets = offsets[: len(offsets) // 2]
    return "", 0


def decode_marks(base: int, metadata: str | None) -> set[int]:
    """The finished offsets a commit at ``base`` carries; empty for no or foreign metadata
    (a commit by another tool, an older sender): then everything past ``base`` is sent again."""
    if not metadata or not metadata.startswith(PREFIX):
        return set()
    try:
        bitmap = zlib.decompress(base64.b64decode(metadata[len(PREFIX):], validate=True))
    except (binascii.Error, zlib.error, ValueError):
        return set()
    out: set[int] = set()
    for index, byte in enumerate(bitmap):
        if byte:
            first = base + index * 8
            out.update(first + bit for bit in range(8) if byte >> bit & 1)
    return out


def _encode(base: int, offsets: list[int]) -> str:
    bitmap = bytearray((offsets[-1] - base) // 8 + 1)
    for offset in offsets:
        delta = offset - base
        bitmap[delta >> 3] |= 1 << (delta & 7)
    return PREFIX + base64.b64encode(zlib.compress(bytes(bitmap), 1)).decode("ascii")
