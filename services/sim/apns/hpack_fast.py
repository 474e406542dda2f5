"""HPACK header-block decoding for the simulator's hot path (RFC 7541), bytes in, bytes out.

The ``hpack`` package decodes a typical APNs request's headers in ~40 µs: a ``HeaderTuple`` and
a debug-log call per field, a memoryview copy per literal, and Huffman decoding one nibble at a
time. This decoder gives the same results (the tests compare both on random header lists) with
less work per field, and reuses ``hpack``'s dynamic table (:class:`hpack.table.HeaderTable`),
its Huffman state machine and its exceptions:

- Huffman strings are decoded a byte at a time with a state table derived from ``hpack``'s
  nibble table (filled lazily: only the (state, byte) pairs that occur are ever computed), and
  recently seen strings are remembered whole (the same ``:path`` for a device, the same topic).
- A whole header block that leaves the dynamic table alone (indexed fields and literals
  without indexing, e.g. h2load's or aioapns' steady state) is remembered by its bytes until
  the dynamic table next changes: the next identical block costs one dict lookup.

Decoding errors raise :class:`hpack.exceptions.HPACKDecodingError` (or a subclass), like
``hpack``: the caller treats them as a COMPRESSION_ERROR.
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

__all__ = ["FastDecoder", "huffman_decode"]

Header = tuple[bytes, bytes]

_STATIC = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(_STATIC)
#: (state << 8 | byte) → (next state << 8, bytes emitted, accepting), None until first needed.
_BYTE_TABLE: list[tuple[int, bytes, bool] | None] = [None] * (256 * 256)
_MAX_CACHED_STRINGS = 4096
_MAX_CACHED_BLOCKS = 1024
_MAX_CACHED_STRING_LEN = 256
_MAX_INT_BYTES = 10  # hpack's VARINT_MAX_LENGTH: a longer integer is a decoding error


def _byte_step(key: int) -> tuple[int, bytes, bool]:
    """Two steps of hpack's nibble state machine, from state ``key >> 8`` on byte ``key & 255``,
    remembered in :data:`_BYTE_TABLE`."""
    state = key >> 8
    out = bytearray()
    flags = 0
    for nibble in ((key >> 4) & 0x0F, key & 0x0F):
        state, flags, symbol = HUFFMAN_TABLE[state * 16 + nibble]
        if flags & HUFFMAN_FAIL:
            raise HPACKDecodingError("Invalid Huffman string")
        if flags & HUFFMAN_EMIT_SYMBOL:
            out.append(symbol)
    entry = _BYTE_TABLE[key] = (state << 8, bytes(out), bool(flags & HUFFMAN_COMPLETE))
    return entry


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded HPACK string (same results and errors as hpack's)."""
    table = _BYTE_TABLE
    base = 0  # current state << 8
    accepting = True
    out = bytearray()
    for byte in data:
        entry = table[base | byte]
        if entry is None:
            entry = _byte_step(base | byte)
        base, emitted, accepting = entry
        if emitted:
            out += emitted
    if not accepting:
        raise HPACKDecodingError("Incomplete Huffman string")
    return bytes(out)


class FastDecoder:
    """One connection's HPACK decoder (the peer's encoder context): ``decode(block)``.

    ``max_header_list_size`` bounds the decoded list as hpack does (name + value + 32 per
    field); ``max_allowed_table_size`` bounds the table-size updates the peer may send (our
    SETTINGS_HEADER_TABLE_SIZE).
    """

    def __init__(self, max_header_list_size: int = 2**16, max_allowed_table_size: int = 4096):
        self.table = HeaderTable()
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = max_allowed_table_size
        self._blocks: dict[bytes, list[Header]] = {}
        self._strings: dict[bytes, bytes] = {}

    def decode(self, block: bytes) -> list[Header]:
        """The header list of one complete header block. Do not mutate the returned list."""
        cached = self._blocks.get(block)
        if cached is not None:
            return cached
        headers: list[Header] = []
        table = self.table
        size = 0
        limit = self.max_header_list_size
        cacheable = True
        n = len(block)
        i = 0
        try:
            while i < n:
                first = block[i]
                if first & 0x80:  # indexed field
                    index = first & 0x7F
                    i += 1
                    if index == 0x7F:
                        index, i = self._integer(block, i, index)
                    if 0 < index <= _STATIC_LEN:
                        header = _STATIC[index - 1]
                    else:
                        header = table.get_by_index(index)
                elif first & 0x40:  # literal with incremental indexing
                    header, i = self._literal(block, i, first & 0x3F, 0x3F)
                    table.add(*header)
                    cacheable = False
                elif first & 0x20:  # dynamic table size update
                    if headers:
                        raise HPACKDecodingError("Table size update not at the start of the block")
                    new_size = first & 0x1F
                    i += 1
                    if new_size == 0x1F:
                        new_size, i = self._integer(block, i, new_size)
                    if new_size > self.max_allowed_table_size:
                        raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                    table.maxsize = new_size
                    cacheable = False
                    continue
                else:  # literal without indexing / never indexed
                    header, i = self._literal(block, i, first & 0x0F, 0x0F)
                headers.append(header)
                size += len(header[0]) + len(header[1]) + 32
                if size > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received"
                    )
        except IndexError as exc:
            raise HPACKDecodingError("Truncated header block") from exc
        if table.maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError("Encoder did not shrink table size to within the max")
        blocks = self._blocks
        if not cacheable:
            blocks.clear()  # dynamic-table references in remembered blocks may mean other things
        elif len(block) <= _MAX_CACHED_STRING_LEN * 4:
            if len(blocks) >= _MAX_CACHED_BLOCKS:
                blocks.clear()
            blocks[block] = headers
        return headers

    @staticmethod
    def _integer(block: bytes, i: int, value: int) -> tuple[int, int]:
        """Continue an integer whose prefix was all ones, from ``block[i]``."""
        shift = 0
        start = i
        while True:
            byte = block[i]
            i += 1
            value += (byte & 0x7F) << shift
            if byte < 0x80:
                return value, i
            shift += 7
            if i - start >= _MAX_INT_BYTES:
                raise HPACKDecodingError("Variable integer representation is too long")

    def _literal(self, block: bytes, i: int, index: int, mask: int) -> tuple[Header, int]:
        i += 1
        if index:
            if index == mask:
                index, i = self._integer(block, i, index)
            if 0 < index <= _STATIC_LEN:
                name = _STATIC[index - 1][0]
            else:
                name = self.table.get_by_index(index)[0]
        else:
            name, i = self._string(block, i)
        value, i = self._string(block, i)
        return (name, value), i

    def _string(self, block: bytes, i: int) -> tuple[bytes, int]:
        first = block[i]
        length = first & 0x7F
        i += 1
        if length == 0x7F:
            length, i = self._integer(block, i, length)
        end = i + length
        raw = block[i:end]
        if len(raw) != length:
            raise HPACKDecodingError("Truncated header block")
        if not first & 0x80:
            return raw, end
        strings = self._strings
        value = strings.get(raw)
        if value is None:
            value = huffman_decode(raw)
            if length <= _MAX_CACHED_STRING_LEN:
                if len(strings) >= _MAX_CACHED_STRINGS:
                    strings.clear()
                strings[raw] = value
        return value, end
