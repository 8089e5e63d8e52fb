#!/usr/bin/env bash
# What tracing costs per request: bench/ab.sh over sidekey binaries as they
# are (no [telemetry]: tracing off) plus the last one again with
# OTEL_EXPORTER_OTLP_ENDPOINT pointing at bench/otlp_sink.py (tracing on,
# every request a sampled span, exported). Loopback only.
#   bench/trace_ab.sh target/release/sidekey                  # off vs on
#   bench/trace_ab.sh /tmp/sidekey-before target/release/sidekey   # before vs off vs on
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/trace_ab.sh [BEFORE] BINARY" >&2; exit 2; }
. bench/lib.sh
bench_tmp
SINK=$(free_port)
python3 bench/otlp_sink.py "$SINK" &
pids+=($!)
wait_listening "$SINK"
last=$(realpath "${@: -1}")
# exec keeps the pid, so ab.sh samples sidekey itself (its export thread included).
printf '#!/bin/sh\nOTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%s exec %s "$@"\n' "$SINK" "$last" > "$tmp/sidekey-traced"
chmod +x "$tmp/sidekey-traced"
bench/ab.sh "$@" "$tmp/sidekey-traced"
