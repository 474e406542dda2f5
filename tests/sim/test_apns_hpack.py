"""The simulator's HPACK decoder against the hpack package's, on the same header blocks."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman

from services.sim.apns.hpack_fast import FastDecoder, huffman_decode

NAMES = [b":method", b":path", b":scheme", b":authority", b"apns-id", b"apns-topic", b"x-custom"]


def random_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(rng.randint(0, 12)):
        name = rng.choice(NAMES)
        if rng.random() < 0.2:
            name += bytes(rng.randrange(97, 123) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.2:
            value = rng.randbytes(rng.choice([0, 1, 5, 40, 130, 300]))
        else:
            value = rng.choice([b"POST", b"/3/device/abab", b"10", rng.randbytes(8).hex().encode()])
        never = rng.random() < 0.3
        headers.append(NeverIndexedHeaderTuple(name, value) if never else (name, value))
    return headers


@pytest.mark.parametrize("seed", range(20))
def test_same_headers_and_dynamic_table_as_hpack(seed: int) -> None:
    rng = random.Random(seed)
    encoder, reference, fast = Encoder(), Decoder(), FastDecoder()
    for _ in range(40):
        if rng.random() < 0.1:
            encoder.header_table_size = rng.choice([0, 100, 256, 4096])  # size update next
        block = encoder.encode(random_headers(rng), huffman=rng.random() < 0.8)
        expected = [tuple(h) for h in reference.decode(block, raw=True)]
        assert fast.decode(block) == expected
        assert list(fast.table.dynamic_entries) == list(reference.header_table.dynamic_entries)


def test_remembered_block_is_forgotten_when_the_table_changes() -> None:
    encoder, fast = Encoder(), FastDecoder()
    fast.decode(encoder.encode([(b"x-a", b"1")]))  # dynamic entry 62
    indexed = b"\xbe"  # indexed field 62
    assert fast.decode(indexed) == [(b"x-a", b"1")]
    assert fast.decode(indexed) == [(b"x-a", b"1")]  # from memory
    fast.decode(encoder.encode([(b"x-b", b"2")]))  # now 62 is x-b
    assert fast.decode(indexed) == [(b"x-b", b"2")]


def test_errors_where_hpack_errs() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        block = rng.randbytes(rng.randint(1, 24))
        try:
            expected: object = [tuple(h) for h in Decoder().decode(block, raw=True)]
        except HPACKDecodingError:
            expected = HPACKDecodingError
        try:
            got: object = FastDecoder().decode(block)
        except HPACKDecodingError:
            got = HPACKDecodingError
        assert got == expected, block.hex()


def test_huffman_matches_hpack() -> None:
    rng = random.Random(3)
    for _ in range(5000):
        data = rng.randbytes(rng.randint(0, 20))
        try:
            expected: object = decode_huffman(data)
        except HPACKDecodingError:
            expected = HPACKDecodingError
        try:
            got: object = huffman_decode(data)
        except HPACKDecodingError:
            got = HPACKDecodingError
        assert got == expected, data.hex()


def test_header_list_size_and_table_size_limits() -> None:
    big = Encoder().encode([(b"x-big", b"v" * 200)], huffman=False)
    with pytest.raises(HPACKDecodingError):
        FastDecoder(max_header_list_size=100).decode(big)
    encoder = Encoder()
    encoder.header_table_size = 8192  # announces a table larger than allowed
    with pytest.raises(HPACKDecodingError):
        FastDecoder(max_allowed_table_size=4096).decode(encoder.encode([(b"a", b"b")]))
