"""Throttle accuracy: measured rate vs target, farm scope, 1 and 3 senders, 50/min and 6,000/min.

Usage: ``.venv/bin/python tests/bench/bench_throttle.py [--window-50 S] [--window-6000 S]``

All four scenarios run at once, each on its own topic prefix with its own sender processes and
a bulk backlog larger than the window can drain; the policy is published on the config topic.
The rate is (sends - 1) / (last - first) over the outcomes after a warm-up, so it is the
long-run rate, not the first burst. Windows default to 120 s (50/min: 100 intervals) and 30 s
(6,000/min: 3,000 intervals). Bar: within ±2 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sdk.policy import PolicyPublisher, PushPolicy
from tests.support.bench_env import bench_workspace, fresh_kafka, stopping
from tests.support.sender_harness import (
    Reader,
    job,
    produce_jobs,
    sender_settings,
    spawn_sender,
    start_sim,
)

WARM_UP_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-50", type=float, default=120.0)
    parser.add_argument("--window-6000", type=float, default=30.0)
    args = parser.parse_args()
    scenarios = [(50.0, 1), (50.0, 3), (6000.0, 1), (6000.0, 3)]
    with bench_workspace("throttle", certificates=1) as (directory, pki):
        topic = pki.topics[0]
        with start_sim(pki) as sim:
            runs = []
            for per_minute, senders in scenarios:
                kafka, topics = fresh_kafka()
                window = args.window_50 if per_minute == 50 else args.window_6000
                backlog = int(per_minute / 60 * (window + WARM_UP_S + 30)) + 100
                produce_jobs(kafka, topics.jobs_bulk, (job(topic, i) for i in range(backlog)))
                PolicyPublisher(kafka).set(PushPolicy(topic, bulk_per_minute=per_minute))
                settings = sender_settings(pki, sim.url)
                procs = [spawn_sender(settings, kafka, directory / f"s{per_minute}-{n}.log")
                         for n in range(senders)]
                runs.append((per_minute, senders, window, kafka, topics, procs))
            started = time.monotonic()
            longest = max(r[2] for r in runs) + WARM_UP_S + 15
            with stopping(*(proc for run in runs for proc in run[5])):
                while time.monotonic() - started < longest:
                    time.sleep(1)
            print(f"bucket per (certificate, lane); farm scope; warm-up {WARM_UP_S:.0f} s excluded")
            for per_minute, senders, window, kafka, topics, _ in runs:
                reader = Reader(kafka, topics.outcomes)
                records = reader.drain()
                reader.close()
                stamps = sorted(r["at"] for r in records)
                if len(stamps) < 3:
                    print(f"{per_minute:>6,.0f}/min x{senders}: too few outcomes ({len(stamps)})")
                    continue
                begin = stamps[0] + WARM_UP_S * 1000
                inside = [s for s in stamps if begin <= s <= begin + window * 1000]
                if len(inside) < 3:
                    print(f"{per_minute:>6,.0f}/min x{senders}: {len(stamps)} outcomes, "
                          f"too few after the warm-up")
                    continue
                rate = (len(inside) - 1) / ((inside[-1] - inside[0]) / 1000) * 60
                error = (rate - per_minute) / per_minute * 100
                print(f"{per_minute:>6,.0f}/min, {senders} sender(s): measured {rate:,.2f}/min "
                      f"over {(inside[-1] - inside[0]) / 1000:.1f} s ({len(inside)} sends), "
                      f"error {error:+.2f} % (bar ±2 %: {'met' if abs(error) <= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
