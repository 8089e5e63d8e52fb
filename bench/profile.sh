#!/usr/bin/env bash
# Where sidekey's CPU goes per proxied request: perf samples sidekey (built
# with symbols, profile `profiling`) while wrk drives a static-header route
# at C connections through it to a local upstream (examples/bench_server).
# Loopback only, bounded: DURATION seconds (default 8). Prints the top
# symbols (self time) and the CPU µs per request of the sidekey process.
#   bench/profile.sh            # c=50, 8 s
#   C=1 DURATION=5 bench/profile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
C=${C:-50}
DURATION=${DURATION:-8}
for tool in perf wrk; do
    command -v "$tool" >/dev/null || { apt-get update -qq; apt-get install -y -qq linux-perf wrk >/dev/null; break; }
done
cargo build --profile profiling --bin sidekey --example bench_server 2>&1 | tail -1
. bench/lib.sh
bench_tmp
UP=$(free_port); UP_TLS=$(free_port); PROXY=$(free_port)
target/profiling/examples/bench_server --port "$UP" --tls-port "$UP_TLS" --ca-out "$tmp" > "$tmp/up.log" &
pids+=($!)
static_config "$tmp/proxy.toml" "$PROXY"
# Default log level: the access line is part of the cost measured.
target/profiling/sidekey run --config "$tmp/proxy.toml" --log-format json 2> "$tmp/sidekey.log" &
SK=$!
pids+=($SK)
for _ in $(seq 50); do grep -q ready "$tmp/up.log" && break; sleep 0.1; done
wait_listening "$PROXY"
ticks() { awk '{print $14+$15}' "/proc/$SK/stat"; }
before=$(ticks)
TARGET="http://127.0.0.1:$UP/" wrk -t1 -c"$C" -d"${DURATION}s" -s bench/wrk.lua "http://127.0.0.1:$PROXY" > "$tmp/wrk.out" &
WRK=$!
sleep 1
perf record -F 999 --call-graph "${CALLGRAPH:-fp}" -p "$SK" -o "$tmp/perf.data" -- sleep "${RECORD:-$((DURATION - 2))}" > /dev/null 2>&1 || true
wait $WRK
after=$(ticks)
reqs=$(grep -o 'rps=[0-9]*' "$tmp/wrk.out" | cut -d= -f2)
hz=$(getconf CLK_TCK)
echo "wrk: $(grep RESULT "$tmp/wrk.out")"
python3 - "$before" "$after" "$hz" "$reqs" "$DURATION" <<'PY'
import sys
b, a, hz, rps, d = map(float, sys.argv[1:])
print(f"sidekey CPU: {(a - b) / hz * 1e6 / (rps * d):.1f} µs/request")
PY
cp "$tmp/perf.data" /tmp/perf.data 2>/dev/null || true
perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/ +- +- *$//' | cut -c1-160 | head -"${TOP:-30}"
