#!/usr/bin/env bash
# `make proof`: the full fault suite, the fuzzers at their proof profile, then every benchmark.
# Runs all three whatever one of them says, and exits 1 if any missed a bar or failed.
# Figures and plots: $OUT (default .state/proof): faults.md, faults/*.png, fuzz.log,
# fuzz-examples.json, bench/ (every benchmark's log, fleet.json, soak.png).
# Broker: MDMPUSH_TEST_BOOTSTRAP, or the local Kafka (tests/support/broker.py); the broker cases
# of the fault suite start a private one on free ports.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.state/proof}
mkdir -p "$OUT"
export PYTHONPATH=.
status=0

echo "== fault suite (MDMPUSH_FAULTS=full)"
rm -f "$OUT/faults.jsonl"
MDMPUSH_FAULTS=full MDMPUSH_FAULTS_RESULTS="$OUT/faults.jsonl" \
  .venv/bin/pytest -q -p no:cacheprovider -s tests/faults > "$OUT/faults.log" 2>&1 || status=1
tail -n 5 "$OUT/faults.log"
if [ -s "$OUT/faults.jsonl" ]; then
  .venv/bin/python -m tests.faults.report "$OUT/faults.jsonl" --png "$OUT/faults" \
    | tee "$OUT/faults.md" || status=1
else
  echo "   no fault case recorded a result"; status=1
fi

echo "== fuzz (HYPOTHESIS_PROFILE=proof; examples run per target: fuzz-examples.json)"
HYPOTHESIS_PROFILE=proof MDMPUSH_FUZZ_REPORT="$OUT/fuzz-examples.json" \
  .venv/bin/pytest -q -p no:cacheprovider tests/fuzz > "$OUT/fuzz.log" 2>&1 || status=1
tail -n 15 "$OUT/fuzz.log"

echo "== benchmarks (full sizes: the fleet at 1,000,000 devices, a 30-minute soak)"
OUT="$OUT/bench" BENCH_SIZE=full bash scripts/bench-all.sh || status=1

echo "== proof: $([ $status -eq 0 ] && echo 'every bar met' || echo 'a bar was MISSED or a run failed')"
exit $status
