"""A fixed-memory set of recently seen job ids, each with an optional small tag.

Why not an OrderedDict of job-id strings: at the default 100,000 ids it costs ~200 bytes per
id (the string and the dict's entry), ~20 MiB that fills only after ~17 minutes of verdicts at
100 pushes/s. The process's RSS then climbs for that long after every start, which a soak cannot
tell from a leak. This structure allocates everything it will ever use when it is built (19.5
bytes per id of capacity: 1.9 MiB at 100,000; tests/bench/bench_recent_ids.py) and never grows.

How: each id is kept as its 64-bit keyed hash (Python's `hash()` of a str: SipHash with the
per-process random key, so an id cannot be crafted to collide) in a ring of `capacity` slots,
oldest overwritten first, plus an exact open-addressing index (linear probing, load <= 1/2,
backward-shift deletion) from hash to ring slot. The set holds the last `capacity` distinct ids
in the order they were first remembered, oldest evicted first; remembering a held id again only
updates its tag. (The OrderedDict moved it to the newest end; here that would leave a hole in the
ring, and every id the correlator remembers twice — its verdict, then the verdict's echo seconds
later — would halve the window. Not moving it shortens an id's stay by those seconds.)

Exactness: an id never remembered (or already evicted) is reported present only if its hash
equals one of the <= capacity hashes held: probability <= capacity / 2**64 per lookup, 5.4e-15
at 100,000 (one false hit in ~10**14 lookups; at 10,000 lookups/s, once in ~600 years). A false
hit would drop one real SENT outcome as a duplicate (no verdict for it), so it must be that rare.
With PYTHONHASHSEED set to a fixed value the key is known and ids could be crafted to collide:
do not set it for the correlator. Present ids are never missed (no false negatives).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

#: Index slot holding no ring position.
EMPTY = -1
#: Tag of an id remembered without one.
NO_TAG = 0


class RecentIds:
    """The last `capacity` remembered job ids (hashed), each with one of `tags` or none."""

    def __init__(self, capacity: int, tags: Sequence[str] = ()) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if len(tags) > 127:
            raise ValueError("at most 127 tags")
        self.capacity = capacity
        self._tags = (None, *tags)
        self._tag_codes = {tag: code for code, tag in enumerate(self._tags) if tag is not None}
        #: ring slot -> hash of the id written there.
        self._hashes = array("q", [0]) * capacity
        #: ring slot -> tag code of the id written there.
        self._codes = array("b", [NO_TAG]) * capacity
        size = 1
        while size < 2 * capacity:
            size *= 2
        self._mask = size - 1
        #: open-addressing index: slot -> ring slot of a live id, or EMPTY.
        self._index = array("i", [EMPTY]) * size
        self._next = 0  # ring slot written next (the oldest once the ring is full)
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def __contains__(self, job_id: str) -> bool:
        return self._find(hash(job_id)) >= 0

    def get(self, job_id: str) -> str | None:
        """The tag `job_id` was last remembered with; None if it has none or is not held."""
        i = self._find(hash(job_id))
        return None if i < 0 else self._tags[self._codes[self._index[i]]]

    def remember(self, job_id: str, tag: str | None = None) -> None:
        """Hold `job_id` (with `tag`) as the newest id, evicting the oldest when full."""
        code = NO_TAG if tag is None else self._tag_codes[tag]
        h = hash(job_id)
        i = self._find(h)
        if i >= 0:  # held already: keeps its place
            self._codes[self._index[i]] = code
            return
        pos = self._next
        if self._live == self.capacity:
            self._evict(pos)
        self._next = (pos + 1) % self.capacity
        self._hashes[pos] = h
        self._codes[pos] = code
        i = h & self._mask
        while self._index[i] != EMPTY:
            i = (i + 1) & self._mask
        self._index[i] = pos
        self._live += 1

    def _find(self, h: int) -> int:
        """The index slot of the live id hashed `h`, or -1."""
        index, hashes, mask = self._index, self._hashes, self._mask
        i = h & mask
        while (pos := index[i]) != EMPTY:
            if hashes[pos] == h:
                return i
            i = (i + 1) & mask
        return -1

    def _evict(self, pos: int) -> None:
        """Drop the id in ring slot `pos` (the oldest) from the index."""
        index, mask = self._index, self._mask
        i = self._hashes[pos] & mask
        while index[i] != pos:
            i = (i + 1) & mask
        self._live -= 1
        # Backward-shift deletion: pull later entries of the probe run into the gap, so every
        # entry stays reachable from its home slot without tombstones.
        j = i
        while True:
            j = (j + 1) & mask
            at = index[j]
            if at == EMPTY:
                break
            home = self._hashes[at] & mask
            if (home <= i < j) or (i < j < home) or (j < home <= i):
                index[i] = at
                i = j
        index[i] = EMPTY
