#!/usr/bin/env bash
# The standard figures of issue 4, each on a fresh local stack; JSON reports go to $OUT.
#   benchmarks/standard.sh [N_ZERO_WORK_TASKS]     (default 10000; moto on 2 cores: try 1000)
# Needs no AWS account. Use `skyloom bench --endpoint URL ...` for a deployed stack.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
OUT="${OUT:-benchmarks/results}"
BIN="${BIN:-.venv/bin}"
mkdir -p "$OUT"

# 1. Throughput: N zero-work independent tasks, 2 workers, submitted 500 at a time.
"$BIN/skyloom" bench --tasks "$N" --workers 2 --slots 2 --prefetch 1 --batch-size 500 --latency-batches "" \
  --output "$OUT/zero-work-$N.json"

# 2. Utilisation: 200 tasks of 100 ms (sleep) on 4 single-slot workers.
"$BIN/skyloom" bench --tasks 200 --mode sleep --seconds 0.1 --workers 4 --slots 1 --prefetch 1 --latency-batches "" \
  --output "$OUT/sleep-100ms-200.json"

# 3. Latency: submit -> results of batches of 1, 10 and 100 zero-work tasks, on an idle stack.
"$BIN/skyloom" bench --tasks 10 --workers 2 --latency-batches 1,10,100 --latency-repeats 3 \
  --output "$OUT/latency.json"

# 4. A nested fork-join (forks of 10 work tasks + a join), with payloads and outputs.
"$BIN/skyloom" bench --tasks 240 --shape forkjoin --fanout 10 --payload-bytes 1024 --output-bytes 1024 \
  --workers 2 --latency-batches "" --output "$OUT/forkjoin-240.json"
