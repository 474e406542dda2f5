"""The jobs finished beyond a committed offset, carried in the offset commit's metadata.

A partition's committed offset can only be one past its longest prefix of finished jobs, and
jobs of different certificates share partitions: one throttled or slow certificate holds that
prefix back while the others run ahead. Without more, a crash repeats everything the fast ones
finished meanwhile — minutes of pushes behind a bulk lane throttled to 50/min. So each commit
also says which offsets past it are already finished (as Confluent's Parallel Consumer does),
and the next owner of the partition skips them: a crash repeats only what was in flight or
finished within the last commit interval.

Format: ``d2:<since_ms>:`` + base64(zlib(bitmap)) (the bitmap part empty when no offset is
finished past the commit), bit *i* (little-endian within each byte) set when offset
``committed + i`` is finished. ``since_ms`` (epoch ms, the committing sender's clock) is no later
than the Kafka timestamp of any outcome the sender wrote, or may yet write, for a job this commit
does not cover: the next owner reads the outcomes topic from there to skip those jobs too
(already_sent.py). ``d1:`` + bitmap (no time) is the format of earlier senders, still read.
Kafka bounds commit metadata (``offset.metadata.max.bytes``, 4,096 by default), so an encoding
that would not fit keeps only the lowest offsets: the rest are sent again, which at-least-once
allows.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Collection

__all__ = ["MAX_METADATA_CHARS", "decode_marks", "decode_since", "encode_marks",
           "encode_marks_kept"]

PREFIX = "d1:"
PREFIX_SINCE = "d2:"
#: Below the broker's default offset.metadata.max.bytes (4,096), leaving room for nothing else.
MAX_METADATA_CHARS = 3_900


def encode_marks(base: int, done: Collection[int], limit: int = MAX_METADATA_CHARS,
                 since_ms: int | None = None) -> str:
    """Metadata for a commit at ``base`` saying the offsets in ``done`` (all > base) are finished
    (and, given ``since_ms``, from when the outcomes of the jobs it does not cover may date);
    '' when there is nothing to say. Keeps the lowest offsets when all would not fit in
    ``limit``."""
    return encode_marks_kept(base, done, limit, since_ms)[0]


def encode_marks_kept(base: int, done: Collection[int], limit: int = MAX_METADATA_CHARS,
                      since_ms: int | None = None) -> tuple[str, int]:
    """:func:`encode_marks` and how many offsets it kept (the others would be sent again)."""
    head = PREFIX if since_ms is None else f"{PREFIX_SINCE}{since_ms}:"
    offsets = sorted(o for o in done if o > base)
    while offsets:
        text = head + _encode(base, offsets)
        if len(text) <= limit:
            return text, len(offsets)
        offsets = offsets[: len(offsets) // 2]
    return ("" if since_ms is None else head), 0


def decode_since(metadata: str | None) -> int | None:
    """The ``since_ms`` a commit carries (None: written by an earlier sender or another tool)."""
    if not metadata or not metadata.startswith(PREFIX_SINCE):
        return None
    since, sep, _ = metadata[len(PREFIX_SINCE):].partition(":")
    return int(since) if sep and since.isdigit() else None


def decode_marks(base: int, metadata: str | None) -> set[int]:
    """The finished offsets a commit at ``base`` carries; empty for no or foreign metadata
    (a commit by another tool): then everything past ``base`` is sent again."""
    if not metadata:
        return set()
    if metadata.startswith(PREFIX_SINCE):
        _, sep, encoded = metadata[len(PREFIX_SINCE):].partition(":")
        if not sep:
            return set()
    elif metadata.startswith(PREFIX):
        encoded = metadata[len(PREFIX):]
    else:
        return set()
    if not encoded:
        return set()
    try:
        bitmap = zlib.decompress(base64.b64decode(encoded, validate=True))
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
    return base64.b64encode(zlib.compress(bytes(bitmap), 1)).decode("ascii")
