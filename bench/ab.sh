#!/usr/bin/env bash
# A/B (or A/B/C...): sidekey binaries, same config and upstream, in
# interleaved rounds (A B A B ...) so machine noise falls on all alike. Per
# binary, the median over rounds of: req/s, p50, p99, CPU µs/request
# (utime+stime of the process), and context switches per request
# (voluntary + involuntary, summed over its threads). Loopback only,
# bounded: ROUNDS x binaries x (DURATION + 1) s.
#   bench/ab.sh /tmp/sidekey-before target/release/sidekey
#   C=1 ROUNDS=5 DURATION=4 bench/ab.sh A B C
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab.sh BINARY BINARY [BINARY...]" >&2; exit 2; }
C=${C:-50}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-5}
command -v wrk >/dev/null || { apt-get update -qq; apt-get install -y -qq wrk >/dev/null; }
cargo build --release --example bench_server 2>&1 | tail -1
. bench/lib.sh
bench_tmp
UP=$(free_port); UP_TLS=$(free_port)
target/release/examples/bench_server --port "$UP" --tls-port "$UP_TLS" --ca-out "$tmp" > "$tmp/up.log" &
pids+=($!)
for _ in $(seq 50); do grep -q ready "$tmp/up.log" && break; sleep 0.1; done

# CPU ticks and context switches of process $1, over all its threads.
sample() {
    local ticks ctx
    ticks=$(awk '{print $14+$15}' "/proc/$1/stat")
    ctx=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s+=$2} END {print s}')
    echo "$ticks $ctx"
}

one() { # $1 label, $2 binary -> appends a line to $tmp/r.$1
    local port sk before after
    port=$(free_port)
    mkdir -p "$tmp/conf"
    static_config "$tmp/conf/proxy.toml" "$port"
    # Default log level, JSON to a file: the access line is part of the cost.
    "$2" run --config "$tmp/conf/proxy.toml" --log-format json 2> "$tmp/log.$1" &
    sk=$!
    wait_listening "$port"
    TARGET="http://127.0.0.1:$UP/" wrk -t1 -c"$C" -d1s -s bench/wrk.lua "http://127.0.0.1:$port" > /dev/null # warm-up
    before=$(sample $sk)
    TARGET="http://127.0.0.1:$UP/" wrk -t1 -c"$C" -d"${DURATION}s" -s bench/wrk.lua "http://127.0.0.1:$port" > "$tmp/wrk.out"
    after=$(sample $sk)
    kill $sk; wait $sk 2>/dev/null || true
    python3 - "$before" "$after" "$(getconf CLK_TCK)" "$DURATION" "$(grep RESULT "$tmp/wrk.out")" >> "$tmp/r.$1" <<'PY'
import sys
b, a, hz, d, res = sys.argv[1:]
(bt, bc), (at, ac) = map(float, b.split()), map(float, a.split())
kv = dict(x.split("=") for x in res.split()[1:])
n = float(kv["rps"]) * float(d)
print(kv["rps"], int(kv["p50_us"]), int(kv["p99_us"]), (at - bt) / float(hz) * 1e6 / n, (ac - bc) / n, kv["errors"])
PY
}

for r in $(seq "$ROUNDS"); do
    i=0
    for bin in "$@"; do
        i=$((i + 1)); one "$i" "$bin"
        echo "round $r: $bin $(tail -1 "$tmp/r.$i")" >&2
    done
done
python3 - "$tmp" "$C" "$@" <<'PY'
import statistics as st, sys
tmp, c, bins = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"c={c}, medians over rounds (req/s, p50 µs, p99 µs, CPU µs/req, ctx switches/req, errors max)")
for i, name in enumerate(bins, 1):
    rows = [list(map(float, l.split())) for l in open(f"{tmp}/r.{i}")]
    m = [st.median(col) for col in zip(*rows)]
    print(f"{name:40} {m[0]:8.0f} {m[1]:6.0f} {m[2]:7.0f} {m[3]:7.1f} {m[4]:6.2f} {max(r[5] for r in rows):4.0f}")
PY
