"""Compact columns for millions of rows: interned strings and fixed-width packed text.

A Python object per pending push costs hundreds of bytes (object header, dict, one str per
field); the memory bar is 200 bytes. So rows are indices into parallel `array`s, repeated strings
(request ids, tenants, topics, enrollment ids) become small ints, and per-push strings whose usual
shape is binary (a 64-hex-digit token, a UUID PushMagic or apns-id) are stored as their raw bytes
in a slab, with a one-byte format tag; any other shape goes to a side dict, exact either way.
"""

from __future__ import annotations

import uuid
from array import array


class Interner:
    """String <-> small int. With `counted`, an id is released when its last user lets go."""

    def __init__(self, counted: bool = False) -> None:
        self._ids: dict[str, int] = {}
        self._strings: list[str | None] = []
        self._counts: array[int] | None = array("I") if counted else None
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, s: str) -> int | None:
        return self._ids.get(s)

    def intern(self, s: str) -> int:
        """The id of `s` (creating it); a counted interner also takes one reference."""
        i = self._ids.get(s)
        if i is None:
            if self._free:
                i = self._free.pop()
                self._strings[i] = s
            else:
                i = len(self._strings)
                self._strings.append(s)
                if self._counts is not None:
                    self._counts.append(0)
            self._ids[s] = i
        if self._counts is not None:
            self._counts[i] += 1
        return i

    def string(self, i: int) -> str:
        s = self._strings[i]
        if s is None:
            raise KeyError(i)
        return s

    def release(self, i: int) -> None:
        """Drop one reference of a counted interner; the id is reused once none is left."""
        if self._counts is None:
            return
        self._counts[i] -= 1
        if self._counts[i] == 0:
            s = self._strings[i]
            assert s is not None
            del self._ids[s]
            self._strings[i] = None
            self._free.append(i)


# Format tags of a FixedText cell.
_NONE, _HEX_LOWER, _HEX_UPPER, _UUID_LOWER, _UUID_UPPER, _SIDE = range(6)


class FixedText:
    """A column of optional strings, `width` raw bytes per row when the string allows it."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._slab = bytearray()
        self._tags = array("B")
        self._side: dict[int, str] = {}

    def append_empty(self) -> None:
        self._slab.extend(bytes(self.width))
        self._tags.append(_NONE)

    def set(self, row: int, s: str | None) -> None:
        self._side.pop(row, None)
        tag, raw = self._pack(s)
        self._tags[row] = tag
        if raw is not None:
            start = row * self.width
            self._slab[start:start + self.width] = raw
        elif tag == _SIDE:
            assert s is not None
            self._side[row] = s

    def get(self, row: int) -> str | None:
        tag = self._tags[row]
        if tag == _NONE:
            return None
        if tag == _SIDE:
            return self._side[row]
        raw = bytes(self._slab[row * self.width:(row + 1) * self.width])
        if tag == _HEX_LOWER:
            return raw.hex()
        if tag == _HEX_UPPER:
            return raw.hex().upper()
        text = str(uuid.UUID(bytes=raw))
        return text if tag == _UUID_LOWER else text.upper()

    def _pack(self, s: str | None) -> tuple[int, bytes | None]:
        if s is None:
            return _NONE, None
        if len(s) == 2 * self.width:
            try:
                raw = bytes.fromhex(s)
            except ValueError:
                raw = b""
            if raw and raw.hex() == s:
                return _HEX_LOWER, raw
            if raw and raw.hex().upper() == s:
                return _HEX_UPPER, raw
        if self.width == 16 and len(s) == 36:
            try:
                u = uuid.UUID(s)
            except ValueError:
                return _SIDE, None
            if str(u) == s:
                return _UUID_LOWER, u.bytes
            if str(u).upper() == s:
                return _UUID_UPPER, u.bytes
        return _SIDE, None
