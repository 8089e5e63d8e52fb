#!/usr/bin/env bash
# End-to-end load through sidekey versus straight to the upstream, in one
# run on this machine (machines are noisy: compare the ratios, not runs).
#   plain HTTP (wrk):  direct | sidekey routed (headers injected) | sidekey unmatched
#   HTTPS (bench_client): direct TLS | CONNECT intercepted | CONNECT blind tunnel
# Loopback only; every run is bounded: DURATION seconds (default 10),
# CONNECTIONS connections (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}

if ! command -v wrk >/dev/null; then
    echo "installing wrk (Debian package)"
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --bin sidekey --example bench_server --example bench_client 2>&1 | tail -1

. bench/lib.sh
bench_tmp
UP=$(free_port); UP_TLS=$(free_port); PROXY=$(free_port)

target/release/examples/bench_server --port "$UP" --tls-port "$UP_TLS" --ca-out "$tmp" > "$tmp/up.log" &
pids+=($!)
target/release/sidekey ca generate --out "$tmp/ca" > /dev/null
for _ in $(seq 50); do [ -f "$tmp/upstream-ca.pem" ] && grep -q ready "$tmp/up.log" && break; sleep 0.1; done

cat > "$tmp/proxy.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY"
admin = ""
connect_ports = [$UP_TLS]

[tls]
ca_cert = "$tmp/ca/ca.crt"
ca_key = "$tmp/ca/ca.key"
extra_roots = ["$tmp/upstream-ca.pem"]

[[routes]]
name = "bench"
hosts = ["localhost"]
set_headers = { "Authorization" = "Bearer static-bench-token", "X-Bench" = "1" }
TOML
RUST_LOG=warn target/release/sidekey run --config "$tmp/proxy.toml" --log-format json 2> "$tmp/sidekey.log" &
SK=$!
pids+=($SK)
wait_listening "$PROXY"

run_wrk() { # name url script target
    local out
    out=$(TARGET="$4" wrk -t"$(( CONNECTIONS < 2 ? 1 : 2 ))" -c"$CONNECTIONS" -d"${DURATION}s" -s "$3" "$2" | grep '^RESULT')
    echo "$1 ${out#RESULT }"
}
run_client() { # name mode target ca
    local out
    out=$(target/release/examples/bench_client --mode "$2" --target "$3" --proxy "127.0.0.1:$PROXY" \
        --ca "$4" --connections "$CONNECTIONS" --seconds "$DURATION")
    echo "$1 ${out#mode=* }"
}

results=$tmp/results
{
    # One connection, no queueing: the latency sidekey itself adds.
    CONNECTIONS=1 run_wrk http_direct_c1 "http://127.0.0.1:$UP" bench/wrk.lua ""
    CONNECTIONS=1 run_wrk http_routed_c1 "http://127.0.0.1:$PROXY" bench/wrk.lua "http://localhost:$UP/"
    CONNECTIONS=1 run_client tls_direct_c1 direct "localhost:$UP_TLS" "$tmp/upstream-ca.pem"
    CONNECTIONS=1 run_client tls_intercepted_c1 intercept "localhost:$UP_TLS" "$tmp/ca/ca.crt"
    # Saturation: throughput with all of it sharing this machine's cores.
    run_wrk http_direct "http://127.0.0.1:$UP" bench/wrk.lua ""
    run_wrk http_routed "http://127.0.0.1:$PROXY" bench/wrk.lua "http://localhost:$UP/"
    run_wrk http_unmatched "http://127.0.0.1:$PROXY" bench/wrk.lua "http://127.0.0.1:$UP/"
    run_client tls_direct direct "localhost:$UP_TLS" "$tmp/upstream-ca.pem"
    run_client tls_intercepted intercept "localhost:$UP_TLS" "$tmp/ca/ca.crt"
    run_client tls_tunnel tunnel "127.0.0.1:$UP_TLS" "$tmp/upstream-ca.pem"
} | tee "$results"

rss=$(awk '/VmHWM/ {print $2}' "/proc/$SK/status")
python3 - "$results" "$rss" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, *kv = line.split()
    rows[name] = {k: float(v) for k, v in (p.split("=") for p in kv)}
print(f"\n{'scenario':<16} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8}   vs baseline")
for name, base in [("http_direct_c1", None), ("http_routed_c1", "http_direct_c1"),
                   ("tls_direct_c1", None), ("tls_intercepted_c1", "tls_direct_c1"), ("http_direct", None), ("http_routed", "http_direct"), ("http_unmatched", "http_direct"),
                   ("tls_direct", None), ("tls_intercepted", "tls_direct"), ("tls_tunnel", "tls_direct")]:
    r = rows.get(name)
    if not r:
        continue
    extra = ""
    if base and base in rows:
        b = rows[base]
        extra = f"   {r['rps'] / b['rps']:.2f}x req/s, p50 {r['p50_us'] - b['p50_us']:+.0f} µs, p99 {r['p99_us'] - b['p99_us']:+.0f} µs"
    print(f"{name:<16} {r['rps']:>9.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f}{extra}")
print(f"\nsidekey peak RSS: {int(sys.argv[2]) / 1024:.1f} MiB")
PY
