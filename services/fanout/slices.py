"""How one request is cut into slices, each expanded where its part of the registry lives.

A slice names one registry partition and either every enrollment of the tenant there
(`target_all`) or at most `chunk_size` explicit enrollment ids that live there. Its key is
deterministic (`request_id@partition[.n]`), so a redelivered or republished request produces the
same slices and the expansion's progress table recognises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.fanout.jobs import registry_partition


@dataclass(frozen=True, slots=True)
class Slice:
    key: str
    partition: int
    #: None: every enrollment of the tenant in this partition.
    enrollment_ids: list[str] | None

    def message(
        self, request: dict[str, Any], source: tuple[str, int, int]
    ) -> dict[str, Any]:
        """The internal topic's JSON value; `source` (topic, partition, offset of the request)
        names the request if it has to be dead-lettered later."""
        return {"request": request, "enrollment_ids": self.enrollment_ids,
                "source": list(source)}


def plan(request: dict[str, Any], partitions: int, chunk_size: int) -> list[Slice]:
    rid = request["request_id"]
    if request["target_all"]:
        return [Slice(f"{rid}@{p}", p, None) for p in range(partitions)]
    by_partition: dict[int, list[str]] = {}
    for eid in sorted(set(request["enrollment_ids"])):
        by_partition.setdefault(registry_partition(eid, partitions), []).append(eid)
    return [
        Slice(f"{rid}@{p}.{n}", p, ids[start : start + chunk_size])
        for p, ids in sorted(by_partition.items())
        for n, start in enumerate(range(0, len(ids), chunk_size))
    ]
