"""Avro cost per record on the sender's own records: fastavro beside the compiled codecs.

Usage: ``.venv/bin/python tests/bench/bench_codec.py [--records N] [--rounds R]``

Both run in this one process, alternating round by round on the same records (a PushJob as the
fan-out writes it, the SENT PushOutcome the sender writes for it), through `AvroSerde` as the
services call it (framing included): `AvroSerde(compiled=False)` is fastavro alone. Each figure is
the best round's CPU time per record (process time: what the other processes on a shared machine
take does not count), and the ratio is fastavro / compiled.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script (python tests/bench/bench_codec.py): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.serde import AvroSerde

TOPIC = "com.apple.mgmt.External.1c2f5b6e-77aa-4d1e-9b1c-5f8e2a0c4d11"


def push_job(n: int) -> dict[str, Any]:
    now = 1_795_000_000_000 + n
    return {
        "job_id": f"req-{n // 1000}/E{n}", "request_id": f"req-{n // 1000}", "tenant": "acme",
        "enrollment_id": f"E{n}", "lane": "BULK", "kind": "MDM", "topic": TOPIC,
        "token_hex": f"{n:064x}", "push_magic": f"magic-{n:08d}-5b1c", "aps_payload": None,
        "expiration": None, "command_type": "apply_policies", "token_updated_at": now - 86_400_000,
        "created_at": now, "attempt": 0, "repush": 0, "last_error": None,
    }


def push_outcome(job: dict[str, Any], n: int) -> dict[str, Any]:
    """The SENT outcome the sender writes for `job` (service.Sender._outcome's fields)."""
    keep = ("job_id", "request_id", "tenant", "enrollment_id", "lane", "attempt", "repush",
            "topic", "token_hex", "push_magic", "token_updated_at")
    return {
        **{k: job[k] for k in keep}, "state": "SENT",
        "apns_id": f"{n:08x}-0000-4000-8000-{n:012x}", "status": 200, "reason": None,
        "apns_timestamp": None, "latency_ms": 2.5 + n % 7, "at": job["created_at"] + 3,
    }


def per_record_us(action: Callable[[Any], object], items: list[Any]) -> float:
    started = time.process_time()
    for item in items:
        action(item)
    return (time.process_time() - started) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    codecs = {"fastavro": AvroSerde(compiled=False), "compiled": AvroSerde()}
    jobs = [push_job(n) for n in range(args.records)]
    outcomes = [push_outcome(job, n) for n, job in enumerate(jobs)]
    reference = codecs["fastavro"]
    job_bytes = [reference.encode("PushJob", job) for job in jobs]
    outcome_bytes = [reference.encode("PushOutcome", outcome) for outcome in outcomes]
    for serde in codecs.values():  # same output before anything is timed
        assert [serde.encode("PushOutcome", o) for o in outcomes[:1000]] == outcome_bytes[:1000]
        assert [serde.decode_as(b, "PushJob") for b in job_bytes[:1000]] == jobs[:1000]

    operations: dict[str, tuple[Callable[[AvroSerde], Callable[[Any], object]], list[Any]]] = {
        "PushJob decode (sender, per job)": (
            lambda s: lambda b: s.decode_as(b, "PushJob"), job_bytes),
        "PushOutcome encode (sender, per push)": (
            lambda s: lambda o: s.encode("PushOutcome", o), outcomes),
        "PushJob encode (fan-out, retry copies)": (
            lambda s: lambda j: s.encode("PushJob", j), jobs),
        "PushOutcome decode (correlator)": (
            lambda s: lambda b: s.decode_as(b, "PushOutcome"), outcome_bytes),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):  # alternating: a busy moment of the machine hits both
        for operation, (bind, items) in operations.items():
            for name, serde in codecs.items():
                us = per_record_us(bind(serde), items)
                best[operation, name] = min(us, best.get((operation, name), us))

    print(f"Avro through AvroSerde, {args.records:,} records x {args.rounds} alternating rounds, "
          "best round, CPU us/record:")
    for operation in operations:
        slow, fast = best[operation, "fastavro"], best[operation, "compiled"]
        print(f"  {operation:40s} fastavro {slow:6.2f}   compiled {fast:6.2f}   "
              f"{slow / fast:4.1f}x")
    per_push = ("PushJob decode (sender, per job)", "PushOutcome encode (sender, per push)")
    slow = sum(best[op, "fastavro"] for op in per_push)
    fast = sum(best[op, "compiled"] for op in per_push)
    print(f"  sender per push (decode + encode)        fastavro {slow:6.2f}   compiled {fast:6.2f}"
          f"   {slow / fast:4.1f}x")


if __name__ == "__main__":
    main()
