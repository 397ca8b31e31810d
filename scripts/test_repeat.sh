#!/usr/bin/env bash
# Run the process-level node tests (pytest marker `process`: node console scripts and avsnet-launch as
# separate processes talking over DDS) N times in a row and report how many passed.
#   bash scripts/test_repeat.sh N [LOAD]      (make test-repeat N=20 LOAD=1)
# LOAD=1 runs one CPU-bound process beside the tests (a busy loop), as a loaded CI machine would.
# Extra pytest selection: TESTS="test/test_x.py -k name" bash scripts/test_repeat.sh 5
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
load=${2:-0}
selection=${TESTS:-"-m process test"}
busy_pid=
if [ "$load" = 1 ]; then
  .venv/bin/python -c "while True: pass" &
  busy_pid=$!
  echo "[test-repeat] CPU-bound process $busy_pid beside the tests"
fi
passed=0
failed_runs=()
for i in $(seq 1 "$n"); do
  start=$(date +%s)
  # shellcheck disable=SC2086
  if bash scripts/run_tests.sh $selection > "/tmp/avsnet_test_repeat_$i.log" 2>&1; then
    passed=$((passed + 1)); status=passed
  else
    failed_runs+=("$i"); status="FAILED (log: /tmp/avsnet_test_repeat_$i.log)"
  fi
  echo "[test-repeat] run $i/$n: $status in $(( $(date +%s) - start )) s: $(tail -1 "/tmp/avsnet_test_repeat_$i.log")"
done
[ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null
echo "[test-repeat] $passed of $n runs passed${failed_runs[*]:+; failed: ${failed_runs[*]}}"
[ "$passed" = "$n" ]
