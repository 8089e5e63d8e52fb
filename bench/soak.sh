#!/usr/bin/env bash
# Soak (issue 12): sidekey (release) under steady load for N minutes with
# short-lived tokens, a config reload every 30 s and a token-endpoint
# outage in the middle; then checks, and exits 1 if any check fails:
#   - no request failed, except 503 token_unavailable while no issued token
#     was valid (during the outage, until the first fetch after it);
#   - every request that reached an upstream carried a token the endpoint
#     issued and that had not expired;
#   - RSS grew less than RSS_GROWTH_MAX_KIB (5 MiB) from the end of the
#     warm-up to the end, under the same load;
#   - open fds under load at the end within FD_DRIFT_MAX (4) of warm-up;
#   - successful token fetches = healthy time / (half the lifetime, where
#     refresh happens) within 20 %;
#   - every config rewrite was reloaded.
#
#   bench/soak.sh [--minutes N]      (default 10; --minutes 1 for a quick run)
#
# Actors (examples/soak_actors.rs, loopback only): a token endpoint issuing
# LIFETIME-second tokens (default 2) with a down switch, a plain-HTTP and a
# TLS upstream that validate them, and a bounded load client: WORKERS
# (default 4) clients per route, each at most RATE (default 20) requests a
# second, for exactly the soak's duration. sidekey has one client and two
# routes: plain HTTP, and HTTPS intercepted with a CA from `sidekey ca
# generate`. KEEP_TMP=1 keeps the temp dir (logs, samples, raw results).
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=10
while [ $# -gt 0 ]; do
    case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
DURATION=$((MINUTES * 60))
LIFETIME=${LIFETIME:-2}
OUTAGE=${OUTAGE:-10}
RELOAD_EVERY=${RELOAD_EVERY:-30}
WARMUP=${WARMUP:-15}
WORKERS=${WORKERS:-4}
RATE=${RATE:-20}
RSS_GROWTH_MAX_KIB=${RSS_GROWTH_MAX_KIB:-5120}
FD_DRIFT_MAX=${FD_DRIFT_MAX:-4}
if [ "$DURATION" -lt $((WARMUP + OUTAGE + 20)) ]; then
    echo "--minutes $MINUTES is too short for a ${WARMUP}s warm-up and a ${OUTAGE}s outage" >&2
    exit 2
fi

echo "building (release)"
cargo build --release --bin sidekey --example soak_actors 2>&1 | tail -1

tmp=$(mktemp -d /tmp/sidekey-soak.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
. bench/lib.sh

target/release/examples/soak_actors serve --lifetime "$LIFETIME" --ca-out "$tmp" \
    > "$tmp/actors.out" 2> "$tmp/actors.err" &
pids+=($!)
for _ in $(seq 100); do grep -q '^ready' "$tmp/actors.out" && break; sleep 0.1; done
read -r TOKEN PLAIN TLS < <(sed -n 's/^ready token=\([0-9]*\) plain=\([0-9]*\) tls=\([0-9]*\)$/\1 \2 \3/p' "$tmp/actors.out")
target/release/sidekey ca generate --out "$tmp/ca" > /dev/null
PROXY=$(free_port)
ADMIN=$(free_port)

# A reload rewrites the file atomically with a new generation number in a
# static header: the routes change, the client does not (its token stays).
write_config() {
    cat > "$tmp/proxy.toml.new" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY"
admin = "127.0.0.1:$ADMIN"
connect_ports = [$TLS]

[tls]
ca_cert = "$tmp/ca/ca.crt"
ca_key = "$tmp/ca/ca.key"
extra_roots = ["$tmp/upstream-ca.pem"]

[clients.soak]
grant = "client_credentials"
token_url = "http://127.0.0.1:$TOKEN/token"
client_id = "soak"
client_secret = "soak-secret"

[[routes]]
name = "plain"
hosts = ["127.0.0.1:$PLAIN"]
client = "soak"
set_headers = { Authorization = "Bearer <<oauth.token>>", X-Soak-Generation = "$1" }

[[routes]]
name = "intercepted"
hosts = ["localhost:$TLS"]
client = "soak"
set_headers = { Authorization = "Bearer <<oauth.token>>", X-Soak-Generation = "$1" }
TOML
    mv "$tmp/proxy.toml.new" "$tmp/proxy.toml"
}
write_config 0

RUST_LOG=${RUST_LOG:-info} target/release/sidekey run --config "$tmp/proxy.toml" --log-format json \
    2> "$tmp/sidekey.log" &
SK=$!
pids+=($SK)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$ADMIN/readyz" > /dev/null || { echo "sidekey did not start:"; cat "$tmp/sidekey.log"; exit 1; }

sample() { # label
    local rss hwm fds
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SK/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$SK/status")
    fds=$(find "/proc/$SK/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$1 $(now_ms) $rss $hwm $fds" >> "$tmp/samples"
}

echo "soak: ${DURATION}s, ${LIFETIME}s tokens, ${OUTAGE}s outage in the middle, reload every ${RELOAD_EVERY}s, $((WORKERS * 2)) clients at <= ${RATE} req/s each"
sample idle
target/release/examples/soak_actors load --proxy "127.0.0.1:$PROXY" \
    --plain "http://127.0.0.1:$PLAIN/soak" --tls "https://localhost:$TLS/soak" \
    --ca "$tmp/ca/ca.crt" --seconds "$DURATION" --workers "$WORKERS" --rate "$RATE" \
    --out "$tmp/load.json" > "$tmp/load.out" 2> "$tmp/load.err" &
LOAD=$!
pids+=($LOAD)
START=$(now_ms)
OUT_AT=$((DURATION / 2 - OUTAGE / 2))
gen=0
reloads=0
: > "$tmp/events"
for ((s = 1; s <= DURATION - 1; s++)); do
    wait_ms=$((START + s * 1000 - $(now_ms)))
    [ "$wait_ms" -gt 0 ] && sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))"
    kill -0 "$SK" 2>/dev/null || { echo "sidekey exited during the soak"; tail -20 "$tmp/sidekey.log"; exit 1; }
    if [ "$s" -eq "$WARMUP" ]; then sample warm; elif [ $((s % 5)) -eq 0 ]; then sample t$s; fi
    if [ "$s" -eq $((DURATION - 2)) ]; then sample end; fi
    if [ $((s % RELOAD_EVERY)) -eq 0 ]; then
        gen=$((gen + 1))
        write_config "$gen"
        reloads=$((reloads + 1))
        echo "reload $(now_ms)" >> "$tmp/events"
    fi
    if [ "$s" -eq "$OUT_AT" ]; then
        curl -sf "http://127.0.0.1:$TOKEN/control/down" > /dev/null
        echo "down $(now_ms)" >> "$tmp/events"
        echo "  t=${s}s token endpoint down"
    fi
    if [ "$s" -eq $((OUT_AT + OUTAGE)) ]; then
        curl -sf "http://127.0.0.1:$TOKEN/control/up" > /dev/null
        echo "up $(now_ms)" >> "$tmp/events"
        echo "  t=${s}s token endpoint up"
    fi
done
wait "$LOAD" || { echo "the load client failed:"; cat "$tmp/load.err"; exit 1; }
echo "stats $(now_ms)" >> "$tmp/events"
curl -sf "http://127.0.0.1:$TOKEN/control/stats" > "$tmp/stats.json"
curl -sf "http://127.0.0.1:$ADMIN/metrics" > "$tmp/metrics.txt"

python3 - "$tmp" "$LIFETIME" "$reloads" "$RSS_GROWTH_MAX_KIB" "$FD_DRIFT_MAX" <<'PY'
import json, re, sys
tmp, lifetime, reloads, rss_max, fd_max = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
load = json.load(open(f"{tmp}/load.json"))
stats = json.load(open(f"{tmp}/stats.json"))
events = {}
for line in open(f"{tmp}/events"):
    k, v = line.split()
    events.setdefault(k, int(v))
samples = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(f"{tmp}/samples")}
metrics = open(f"{tmp}/metrics.txt").read()
down, up, end = events["down"], events["up"], events["stats"]
issued = stats["issued"]
ok_fetches = len(issued)
checks = []
def check(name, passed, detail):
    checks.append((name, passed, detail))

# 1. failures: only 503 token_unavailable while no issued token was valid.
TOL = 100  # ms: a token issued this recently may not have reached sidekey yet
def live(ms):
    return any(i + TOL <= ms <= e - TOL for i, e in issued)
bad = [f for f in load["failures"] if not (f[2] == 503 and f[3] == "token_unavailable" and not live(f[0]))]
allowed = [f for f in load["failures"] if f not in bad]
window = ""
if allowed:
    first, last = min(f[0] for f in allowed), max(f[0] for f in allowed)
    window = f"; 503s from outage+{(first - down) / 1000:.1f}s to outage end+{(last - up) / 1000:.1f}s"
check("requests", not bad,
      f"{load['requests']} sent, {load['requests'] - len(load['failures'])} ok, {len(allowed)} x 503 token_unavailable with no valid token{window}"
      + (f"; {len(bad)} other failures, first: {bad[:3]}" if bad else ""))

# 2. what reached the upstreams carried live tokens.
u = stats["upstream"]
check("upstream tokens", u["missing"] == 0 and u["unknown"] == 0 and u["expired"] == 0,
      f"{u['ok']} valid, {u['missing']} without a token, {u['unknown']} unknown, {u['expired']} expired (beyond {stats['grace_ms']} ms); latest arrival {u['late_max_us']} µs after expiry")

# 3. RSS after warm-up.
warm, last = samples["warm"], samples["end"]
growth = last[1] - warm[1]
check("RSS", growth < rss_max,
      f"{warm[1] / 1024:.1f} MiB after warm-up, {last[1] / 1024:.1f} MiB at the end ({growth:+d} KiB; bound < {rss_max} KiB), peak {last[2] / 1024:.1f} MiB")

# 4. fds under the same load.
check("open fds", abs(last[3] - warm[3]) <= fd_max,
      f"{warm[3]} after warm-up, {last[3]} at the end (idle before the load: {samples['idle'][3]}; bound ±{fd_max})")

# 5. token fetches: one per half lifetime of healthy time.
interval = lifetime * 0.5 * 1000
before = [i for i, _ in issued if i < down]
after = [i for i, _ in issued if i >= up]
healthy = 0.0
segments = 0
if before:
    healthy += down - before[0]; segments += 1
if after:
    healthy += end - after[0]; segments += 1
expected = healthy / interval + segments
recovery = (after[0] - up) / 1000 if after else float("nan")
check("token fetches", abs(ok_fetches - expected) <= 0.2 * expected,
      f"{ok_fetches} ok (+{stats['refused']} refused during the outage); expected {expected:.0f} = {healthy / 1000:.0f}s healthy / {interval / 1000:.1f}s ±20%; first fetch {recovery:.1f}s after the endpoint came back")

# 6. reloads.
m = re.search(r'sidekey_config_reloads_total\{outcome="ok"\} (\d+)', metrics)
done = int(m.group(1)) if m else 0
check("config reloads", done >= reloads, f"{reloads} rewrites, {done} reloads ok")

width = max(len(c[0]) for c in checks)
print()
for name, passed, detail in checks:
    print(f"{'PASS' if passed else 'FAIL'}  {name:<{width}}  {detail}")
failed = [c for c in checks if not c[1]]
print(f"\nsoak {'passed' if not failed else 'FAILED'}: {len(checks) - len(failed)} of {len(checks)} checks")
sys.exit(1 if failed else 0)
PY
