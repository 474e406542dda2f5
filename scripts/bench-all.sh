#!/usr/bin/env bash
# Every benchmark behind the README's figures table, one after another (they would fight over 2 cores),
# each printing its own figure beside its peer's; exits 1 when any bar is MISSED. Logs go to $OUT (default .state/bench).
# `make bench` runs the set-up (setup, test-tools) and then this script; uses MDMPUSH_TEST_BOOTSTRAP or starts the local Kafka.
# BENCH_SIZE=full (what `make proof` sets) runs the fleet at 1,000,000 devices and the soak for 30 minutes; the default
# (short) runs them at 100,000 devices and 8 minutes (about 40 minutes less on 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.state/bench}
mkdir -p "$OUT"
export PYTHONPATH=.
# A benchmark misses when it exits non-zero (a bar or the run itself failed, or its timeout:
# TIMEOUT seconds, 30 minutes unless the line says otherwise) or prints a MISSED verdict; the
# script runs them all, then exits 1 if any missed.
missed=()
run() {
  local name=$1; shift
  echo "== $name: $*"
  timeout "${TIMEOUT:-1800}" .venv/bin/python "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  echo "   exit $code"
  grep -v '^%' "$OUT/$name.log" | tail -n 15
  if [ $code -ne 0 ] || grep -q 'MISSED' "$OUT/$name.log"; then
    missed+=("$name")
  fi
}
run sim_ceiling     tests/bench/bench_sim_ceiling.py
run transports      tests/bench/bench_transports.py
run sender          tests/bench/bench_sender.py
run sender_crash    tests/bench/bench_sender_crash.py --runs 5  # the bar holds in every run
run throttle        tests/bench/bench_throttle.py
run retry           tests/bench/bench_retry.py
run priority        tests/bench/bench_priority.py
run fanout          tests/bench/bench_fanout.py
run e2e             -m tests.bench.bench_e2e
run accuracy        -m tests.bench.bench_accuracy
run correlator_mem  tests/bench/bench_correlator_memory.py  # ~6 min: tracemalloc is slow
run poison_pace     tests/bench/bench_poison_pace.py
run memory          tests/bench/bench_memory.py  # 2 rounds of 100,000 unknown devices + certificates
if [ "${BENCH_SIZE:-short}" = full ]; then
  TIMEOUT=5400 run fleet tests/bench/bench_fleet.py --devices 1000000 --json "$OUT/fleet.json"
  TIMEOUT=3600 run soak  tests/bench/bench_soak.py --minutes 30 --png "$OUT/soak.png"
else
  run fleet tests/bench/bench_fleet.py --devices 100000 --json "$OUT/fleet.json"
  run soak  tests/bench/bench_soak.py --minutes 8 --fault-every-s 120 --png "$OUT/soak.png"
fi
if [ ${#missed[@]} -gt 0 ]; then
  echo "== MISSED: ${missed[*]}"
  exit 1
fi
echo "== every bar met"
