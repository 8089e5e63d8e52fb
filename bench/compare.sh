#!/usr/bin/env bash
# sidekey against other proxies that add a header, on this machine, in one
# run (machines are noisy: compare the ratios within a run).
#
#   upstream   nginx: 200 only with `Authorization: Bearer bench-token`, else 403
#   plain HTTP (wrk -t1 via bench/compare/wrk.lua):
#              direct (wrk -H sends the header) | sidekey | squid | tinyproxy
#              (forward proxies, absolute-form) | HAProxy | nginx as a reverse
#              proxy (origin-form; each sets the header and forwards on pooled
#              keep-alive connections: the same L7 work, the cost to beat)
#              (each proxy injects the header: configs in bench/compare/)
#   HTTPS      (examples/bench_client, c=TLS_CONCURRENCY): through sidekey,
#              plain HTTP | CONNECT intercepted (leaf cached) | CONNECT blind
#              tunnel, plus direct TLS to nginx as the reference
#
# Per run: req/s, p50, p99, non-2xx, CPU per request of the proxy (utime +
# stime of all its processes, from /proc) and its peak RSS (VmHWM, reset
# before each run). Targets are interleaved within each round; the tables
# show the median over rounds. Loopback only; every load is bounded in time.
#
#   bench/compare.sh [--quick]
#   env: DURATION (s, default 5)  ROUNDS (3)  CONCURRENCY ("1 50 256")
#        TLS_CONCURRENCY (50)  OUT (bench/results/compare-latest.md)
#        TINYPROXY_LOG_LEVEL (Connect: logs each request; see tinyproxy.conf)
#        KEEP_TMP=1 keeps the temp dir (configs, logs, raw results)
#        COMPARE_TMPDIR (/dev/shm: tmpfs, as tinyproxy fsyncs every log line; else /tmp)
#   --quick: DURATION=2 ROUNDS=1 CONCURRENCY="1 50"
#
# Installs nginx-light, wrk, tinyproxy, squid and haproxy from Debian when missing
# (needs root), builds sidekey (release) and bench_client.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
    case $a in
        --quick) DURATION=2 ROUNDS=1 CONCURRENCY="1 50" ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $a (try --help)" >&2; exit 64 ;;
    esac
done
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-"1 50 256"}
TLS_CONCURRENCY=${TLS_CONCURRENCY:-50}
OUT=${OUT:-bench/results/compare-latest.md}
TINYPROXY_LOG_LEVEL=${TINYPROXY_LOG_LEVEL:-Connect}
WARMUP=1
HTTP_TARGETS=(direct sidekey haproxy nginx_proxy squid tinyproxy)
TLS_TARGETS=(sidekey_http sidekey_intercept sidekey_tunnel direct_tls)

# ---------------------------------------------------------------- install
missing=()
for p in nginx-light wrk tinyproxy squid haproxy; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing from Debian: ${missing[*]}"
    # Packages must not start their system services (port 80, 3128, 8888, haproxy):
    # the benchmark starts its own instances. Same guard Docker images use.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
    if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
SQUID=$(command -v squid || echo /usr/sbin/squid)
TINYPROXY=$(command -v tinyproxy || echo /usr/bin/tinyproxy)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

# ---------------------------------------------------------------- build
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
SIDEKEY=$TARGET_DIR/release/sidekey
BENCH_CLIENT=$TARGET_DIR/release/examples/bench_client
echo "building sidekey (release) and bench_client"
build_rc=0 build_note=""
build_log=$(cargo build --release --bin sidekey --example bench_client 2>&1) || build_rc=$?
tail -3 <<< "$build_log"
if [ "$build_rc" != 0 ]; then
    # Someone else may be editing src/ right now: fall back to the last build, loudly.
    if [ -x "$SIDEKEY" ] && [ -x "$BENCH_CLIENT" ]; then
        echo "!!! WARNING: cargo build failed; benchmarking the existing binaries in $TARGET_DIR/release" >&2
        build_note="the build failed: benchmarked the existing sidekey binary of $(date -r "$SIDEKEY" '+%F %T')"
    else
        echo "cargo build failed" >&2
        exit 1
    fi
fi

nconc=$(wc -w <<< "$CONCURRENCY")
nruns=$((ROUNDS * (nconc * ${#HTTP_TARGETS[@]} + ${#TLS_TARGETS[@]})))
echo "plan: plain HTTP at c=[$CONCURRENCY] and HTTPS at c=$TLS_CONCURRENCY, $ROUNDS round(s):" \
    "$nruns runs of ${DURATION}s, about $((nruns * (DURATION + 1) + 6 * (WARMUP + 1) + 10))s after the build"

# ---------------------------------------------------------------- start
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
# The temp dir holds every proxy's log. On tmpfs by default: tinyproxy
# fsync()s its log after every line, which on a disk would measure the disk.
parent=${COMPARE_TMPDIR:-/dev/shm}
[ -d "$parent" ] && [ -w "$parent" ] || parent=/tmp
tmp=$(mktemp -d "$parent/sidekey-compare.XXXXXX")
chmod 755 "$tmp" # squid and tinyproxy drop to unprivileged users
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
    for _ in $(seq 30); do
        local alive=""
        for p in "${pids[@]}"; do kill -0 "$p" 2> /dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. bench/lib.sh
UP_PORT=$(free_port) UP_TLS_PORT=$(free_port) UP_TLS_OPEN_PORT=$(free_port)
SK_PORT=$(free_port) SQUID_PORT=$(free_port) TP_PORT=$(free_port)
HA_PORT=$(free_port) NGP_PORT=$(free_port)

mkdir -p "$tmp"/{conf,pki,nginx,nginx-proxy,haproxy,squid,tinyproxy}
# Upstream TLS: a throwaway CA and a leaf for localhost and 127.0.0.1, both ECDSA P-256.
(
    cd "$tmp/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=compare-bench-upstream-ca -keyout ca.key -out ca.crt 2> /dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj /CN=localhost -keyout upstream.key -out upstream.csr 2> /dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in upstream.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile ext.cnf -out upstream.crt 2> /dev/null
)
"$SIDEKEY" ca generate --out "$tmp/ca" > /dev/null

for f in nginx.conf nginx-proxy.conf haproxy.cfg squid.conf tinyproxy.conf sidekey.toml; do
    sed -e "s|@TMP@|$tmp|g" -e "s|@UP_PORT@|$UP_PORT|g" -e "s|@UP_TLS_PORT@|$UP_TLS_PORT|g" \
        -e "s|@UP_TLS_OPEN_PORT@|$UP_TLS_OPEN_PORT|g" -e "s|@SK_PORT@|$SK_PORT|g" \
        -e "s|@SQUID_PORT@|$SQUID_PORT|g" -e "s|@TP_PORT@|$TP_PORT|g" \
        -e "s|@HA_PORT@|$HA_PORT|g" -e "s|@NGP_PORT@|$NGP_PORT|g" \
        -e "s|@TP_LOG_LEVEL@|$TINYPROXY_LOG_LEVEL|g" \
        "bench/compare/$f" > "$tmp/conf/$f"
done
chown -R proxy:proxy "$tmp/squid" 2> /dev/null || true
chown -R nobody:nogroup "$tmp/tinyproxy" 2> /dev/null || true

wait_port() { # name pid port log
    for _ in $(seq 100); do
        if ! kill -0 "$2" 2> /dev/null; then
            echo "$1 exited at start; its log:" >&2
            tail -20 "$4" >&2
            exit 1
        fi
        (exec 3<> "/dev/tcp/127.0.0.1/$3") 2> /dev/null && return 0
        sleep 0.1
    done
    echo "$1 is not listening on 127.0.0.1:$3 after 10s; its log:" >&2
    tail -20 "$4" >&2
    exit 1
}

"$NGINX" -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/conf/nginx.conf" 2>> "$tmp/nginx/error.log" &
NGINX_PID=$!
pids+=("$NGINX_PID")
# Default log level (no RUST_LOG): one access line per request, to a file.
env -u RUST_LOG "$SIDEKEY" run --config "$tmp/conf/sidekey.toml" --log-format json 2> "$tmp/sidekey.log" &
SK_PID=$!
pids+=("$SK_PID")
"$SQUID" -N -f "$tmp/conf/squid.conf" > "$tmp/squid/stdout.log" 2>&1 &
SQUID_PID=$!
pids+=("$SQUID_PID")
"$TINYPROXY" -d -c "$tmp/conf/tinyproxy.conf" > "$tmp/tinyproxy/stdout.log" 2>&1 &
TP_PID=$!
pids+=("$TP_PID")
"$NGINX" -p "$tmp/nginx-proxy" -e "$tmp/nginx-proxy/error.log" -c "$tmp/conf/nginx-proxy.conf" \
    2>> "$tmp/nginx-proxy/error.log" &
NGP_PID=$!
pids+=("$NGP_PID")
# -db: stays in the foreground; the per-request log goes to stdout, a file.
"$HAPROXY" -db -f "$tmp/conf/haproxy.cfg" > "$tmp/haproxy/access.log" 2> "$tmp/haproxy/error.log" &
HA_PID=$!
pids+=("$HA_PID")

wait_port nginx "$NGINX_PID" "$UP_PORT" "$tmp/nginx/error.log"
wait_port nginx "$NGINX_PID" "$UP_TLS_PORT" "$tmp/nginx/error.log"
wait_port sidekey "$SK_PID" "$SK_PORT" "$tmp/sidekey.log"
wait_port squid "$SQUID_PID" "$SQUID_PORT" "$tmp/squid/cache.log"
wait_port tinyproxy "$TP_PID" "$TP_PORT" "$tmp/tinyproxy/stdout.log"
wait_port nginx-proxy "$NGP_PID" "$NGP_PORT" "$tmp/nginx-proxy/error.log"
wait_port haproxy "$HA_PID" "$HA_PORT" "$tmp/haproxy/error.log"

# ---------------------------------------------------------------- checks
UP_URL="http://127.0.0.1:$UP_PORT/"
check() { # description expected-status curl-args...
    local want=$2 desc=$1 got
    shift 2
    got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true)
    if [ "$got" != "$want" ]; then
        echo "!!! check failed: $desc: got $got, want $want" >&2
        exit 1
    fi
    echo "  ok  $desc: $got"
}
echo "checks:"
check "direct, no header (nginx refuses)" 403 --noproxy '*' "$UP_URL"
check "direct, with the header" 200 --noproxy '*' -H "Authorization: Bearer bench-token" "$UP_URL"
check "via sidekey (injects)" 200 -x "http://127.0.0.1:$SK_PORT" "$UP_URL"
check "via squid (injects)" 200 -x "http://127.0.0.1:$SQUID_PORT" "$UP_URL"
check "via tinyproxy (injects)" 200 -x "http://127.0.0.1:$TP_PORT" "$UP_URL"
check "via HAProxy, reverse (injects)" 200 --noproxy '*' "http://127.0.0.1:$HA_PORT/"
check "via nginx, reverse (injects)" 200 --noproxy '*' "http://127.0.0.1:$NGP_PORT/"
check "direct TLS, no header (nginx refuses)" 403 --noproxy '*' --cacert "$tmp/pki/ca.crt" \
    "https://localhost:$UP_TLS_PORT/"
check "sidekey CONNECT intercepted (injects; mints the leaf)" 200 -x "http://127.0.0.1:$SK_PORT" \
    --cacert "$tmp/ca/ca.crt" "https://localhost:$UP_TLS_PORT/"
check "sidekey CONNECT blind tunnel" 200 -x "http://127.0.0.1:$SK_PORT" \
    --cacert "$tmp/pki/ca.crt" "https://127.0.0.1:$UP_TLS_OPEN_PORT/"

# ---------------------------------------------------------------- measure
# All live processes in the tree rooted at $1 (squid helpers, nginx workers).
tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            keep[root] = 1; print root
            do {
                more = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; more = 1 } }
            } while (more)
        }'
}
# utime + stime (+ reaped children's) in clock ticks, summed over the tree.
cpu_ticks() {
    local p total=0 f
    for p in $(tree "$1"); do
        f=$(cat "/proc/$p/stat" 2> /dev/null) || continue
        f=${f##*) }
        read -r -a s <<< "$f"
        total=$((total + s[11] + s[12] + s[13] + s[14]))
    done
    echo "$total"
}
reset_hwm() {
    local p
    for p in $(tree "$1"); do echo 5 > "/proc/$p/clear_refs" 2> /dev/null || true; done
}
hwm_kb() {
    local p total=0 v
    for p in $(tree "$1"); do
        v=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2> /dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
RESULTS=$tmp/results.txt
: > "$RESULTS"
failures=()
bound=$((DURATION + 30))

# Prints "requests rps p50_us p99_us non2xx sock_errors" for one load run.
load() { # target concurrency seconds
    local t=$1 c=$2 d=$3 out
    case $t in
        direct) out=$(timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency -s bench/compare/wrk.lua \
            -H "Authorization: Bearer bench-token" "$UP_URL") || true ;;
        sidekey | sidekey_http) out=$(TARGET=$UP_URL timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency \
            -s bench/compare/wrk.lua "http://127.0.0.1:$SK_PORT") || true ;;
        squid) out=$(TARGET=$UP_URL timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency \
            -s bench/compare/wrk.lua "http://127.0.0.1:$SQUID_PORT") || true ;;
        tinyproxy) out=$(TARGET=$UP_URL timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency \
            -s bench/compare/wrk.lua "http://127.0.0.1:$TP_PORT") || true ;;
        # Reverse proxies: origin-form (no TARGET), no header from wrk.
        haproxy) out=$(TARGET='' timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency \
            -s bench/compare/wrk.lua "http://127.0.0.1:$HA_PORT/") || true ;;
        nginx_proxy) out=$(TARGET='' timeout "$bound" wrk -t1 -c"$c" -d"${d}s" --latency \
            -s bench/compare/wrk.lua "http://127.0.0.1:$NGP_PORT/") || true ;;
        sidekey_intercept) out=$(timeout "$bound" "$BENCH_CLIENT" --mode intercept --target "localhost:$UP_TLS_PORT" \
            --proxy "127.0.0.1:$SK_PORT" --ca "$tmp/ca/ca.crt" --connections "$c" --seconds "$d" 2>&1) || true ;;
        sidekey_tunnel) out=$(timeout "$bound" "$BENCH_CLIENT" --mode tunnel --target "127.0.0.1:$UP_TLS_OPEN_PORT" \
            --proxy "127.0.0.1:$SK_PORT" --ca "$tmp/pki/ca.crt" --connections "$c" --seconds "$d" 2>&1) || true ;;
        direct_tls) out=$(timeout "$bound" "$BENCH_CLIENT" --mode direct --target "127.0.0.1:$UP_TLS_OPEN_PORT" \
            --ca "$tmp/pki/ca.crt" --connections "$c" --seconds "$d" 2>&1) || true ;;
    esac
    echo "$out" >> "$tmp/load.log"
    if grep -q '^RESULT ' <<< "$out"; then # wrk + wrk.lua
        grep '^RESULT ' <<< "$out" | tr ' ' '\n' | awk -F= '
            { v[$1] = $2 }
            END { print v["requests"], v["rps"], v["p50_us"], v["p99_us"], v["non2xx"], v["sock_errors"] }'
    elif grep -q '^mode=' <<< "$out"; then # bench_client: errors = non-200 or a failed connection
        grep '^mode=' <<< "$out" | tr ' ' '\n' | awk -F= '
            { v[$1] = $2 }
            END { print v["requests"], v["rps"], v["p50_us"], v["p99_us"], v["errors"], 0 }'
    else
        echo "0 0 0 0 0 1"
    fi
}

root_of() {
    case $1 in
        direct | direct_tls) echo "$NGINX_PID" ;;
        sidekey*) echo "$SK_PID" ;;
        squid) echo "$SQUID_PID" ;;
        tinyproxy) echo "$TP_PID" ;;
        haproxy) echo "$HA_PID" ;;
        nginx_proxy) echo "$NGP_PID" ;;
    esac
}

measure() { # table concurrency round target
    local table=$1 c=$2 r=$3 t=$4 root n0 n1 p0 p1 rss res
    root=$(root_of "$t")
    reset_hwm "$root"
    p0=$(cpu_ticks "$root")
    n0=$(cpu_ticks "$NGINX_PID")
    res=$(load "$t" "$c" "$DURATION")
    p1=$(cpu_ticks "$root")
    n1=$(cpu_ticks "$NGINX_PID")
    rss=$(hwm_kb "$root")
    read -r req rps p50 p99 non2xx sockerr <<< "$res"
    echo "$table $c $r $t $req $rps $p50 $p99 $non2xx $sockerr $((p1 - p0)) $((n1 - n0)) $rss" >> "$RESULTS"
    printf '  %-5s c=%-4s round %s %-18s %9.0f req/s  p50 %6s µs  p99 %7s µs  non-2xx %s\n' \
        "$table" "$c" "$r" "$t" "$rps" "$p50" "$p99" "$non2xx"
    # A non-2xx means a proxy did not inject the header (or broke): a failure.
    # Socket errors are reported in the tables (tinyproxy closes every client
    # connection after one response, which wrk counts as a read error).
    if [ "$non2xx" != 0 ] || [ "$req" = 0 ]; then
        failures+=("$table c=$c round $r $t: $non2xx non-2xx responses, $req requests")
        echo "!!! $t at c=$c: $non2xx NON-2XX RESPONSES, $req requests" >&2
    fi
}

echo "warm-up (${WARMUP}s each, not recorded)"
for t in "${HTTP_TARGETS[@]}" sidekey_intercept sidekey_tunnel; do
    load "$t" 10 "$WARMUP" > /dev/null
done

echo "plain HTTP"
for c in $CONCURRENCY; do
    for r in $(seq "$ROUNDS"); do
        # Interleaved, and the starting target rotates from round to round.
        n=${#HTTP_TARGETS[@]}
        for i in $(seq 0 $((n - 1))); do
            measure http "$c" "$r" "${HTTP_TARGETS[$(((i + r - 1) % n))]}"
        done
    done
done
echo "HTTPS through sidekey"
for r in $(seq "$ROUNDS"); do
    n=${#TLS_TARGETS[@]}
    for i in $(seq 0 $((n - 1))); do
        measure https "$TLS_CONCURRENCY" "$r" "${TLS_TARGETS[$(((i + r - 1) % n))]}"
    done
done

# ---------------------------------------------------------------- report
mkdir -p "$(dirname "$OUT")"
logs="sidekey $(wc -l < "$tmp/sidekey.log"), squid $(wc -l < "$tmp/squid/access.log"),"
logs+=" tinyproxy $(wc -l < "$tmp/tinyproxy/tinyproxy.log"),"
logs+=" haproxy $(wc -l < "$tmp/haproxy/access.log"), nginx proxy $(wc -l < "$tmp/nginx-proxy/access.log")"
ver() { "$@" 2>&1 | head -1 || true; }
versions="nginx $(ver "$NGINX" -v | sed 's|.*/||'), squid $(ver "$SQUID" -v | awk '{print $4}'),"
versions+=" tinyproxy $(ver "$TINYPROXY" -v | awk '{print $2}'), wrk $(ver wrk -v | awk '{print $2}'),"
versions+=" haproxy $(ver "$HAPROXY" -v | awk '{print $3}'),"
versions+=" sidekey $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2> /dev/null || echo '+uncommitted src')"
python3 - "$RESULTS" "$OUT" "$CLK_TCK" "$DURATION" "$ROUNDS" "$TLS_CONCURRENCY" "$versions" "${#failures[@]}" \
    "$TINYPROXY_LOG_LEVEL" "$logs" "$(dirname "$tmp")" "$(stat -f -c %T "$tmp")" "$build_note" <<'PY'
import platform, statistics, subprocess, sys, time
from collections import defaultdict

results, out, clk, duration, rounds, tls_c, versions, nfail, tp_log, logs, tmpdir, fstype, build_note = sys.argv[1:14]
tick_us = 1e6 / int(clk)
runs = defaultdict(list)
for line in open(results):
    table, c, r, t, req, rps, p50, p99, non2xx, sock, cpu, ncpu, rss = line.split()
    req = int(req)
    runs[(table, int(c), t)].append(dict(
        rps=float(rps), p50=int(p50) / 1000, p99=int(p99) / 1000, non2xx=int(non2xx), sock=int(sock),
        cpu=int(cpu) * tick_us / req if req else float("nan"),
        ncpu=int(ncpu) * tick_us / req if req else float("nan"),
        rss=int(rss) / 1024))

def med(table, c, t, k):
    v = runs.get((table, c, t))
    return statistics.median(x[k] for x in v) if v else None

def worst(table, c, t, k):
    return max(x[k] for x in runs[(table, c, t)])

def f(v, nd=0):
    return "n/a" if v is None else f"{v:.{nd}f}"

cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
md = [
    "# sidekey vs. nginx direct, HAProxy and nginx as reverse proxies, squid, tinyproxy (bench/compare.sh)",
    "",
    f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
    f"- machine: {nproc} CPUs, {cpu_model}, Linux {platform.release()}",
    f"- versions: {versions}",
] + ([f"- **WARNING: {build_note}**"] if build_note else []) + [
    f"- runs: {duration} s each, {rounds} round(s), targets interleaved; medians over rounds "
    f"(non-2xx and socket errors: the worst round)",
    "- client, upstream and proxy share the machine's cores: compare within this run",
    f"- configs, logs: {tmpdir} ({fstype})",
    "- CPU µs/req: utime+stime of every process of the proxy (for direct: of nginx) over the run / requests; "
    "peak RSS: VmHWM summed over those processes, reset to the current RSS before each run",
    "- every proxy writes a per-request log to a file: sidekey its access line (default log level), "
    f"squid access_log, tinyproxy LogLevel {tp_log}, HAProxy option httplog (to stdout, a file), "
    f"nginx proxy access_log (log lines written in this run: {logs})",
    "- HAProxy and nginx (proxy) are reverse proxies (wrk sends origin-form): they parse, set the header "
    "and forward on pooled keep-alive connections, the L7 work sidekey does for a forward request",
    "- tinyproxy closes each client connection after one response, so its socket errors are wrk "
    "reconnecting, one per request (not failures); non-2xx must be 0 everywhere",
    "",
]
LABEL = {"direct": "direct (nginx)", "direct_tls": "direct TLS (nginx)",
         "haproxy": "HAProxy (reverse proxy)", "nginx_proxy": "nginx (reverse proxy)",
         "sidekey_http": "sidekey plain HTTP", "sidekey_intercept": "sidekey HTTPS intercepted",
         "sidekey_tunnel": "sidekey HTTPS blind tunnel"}
concs = sorted({c for (tb, c, _) in runs if tb == "http"})
for c in concs:
    d_rps = med("http", c, "direct", "rps")
    md += [f"## Plain HTTP, {c} connection{'s' if c > 1 else ''} (wrk -t1 -c{c})", "",
           "| target | req/s | p50 ms | p99 ms | req/s vs direct | proxy CPU µs/req | peak RSS MiB | non-2xx | socket errors | nginx CPU µs/req |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in ["direct", "sidekey", "haproxy", "nginx_proxy", "squid", "tinyproxy"]:
        if ("http", c, t) not in runs:
            continue
        rps = med("http", c, t, "rps")
        md.append(f"| {LABEL.get(t, t)} | {f(rps)} | {f(med('http', c, t, 'p50'), 3)} | {f(med('http', c, t, 'p99'), 3)} "
                  f"| {f(rps / d_rps if d_rps else None, 2)}x | {f(med('http', c, t, 'cpu'), 1)} | {f(med('http', c, t, 'rss'), 1)} "
                  f"| {worst('http', c, t, 'non2xx')} | {worst('http', c, t, 'sock')} | {f(med('http', c, t, 'ncpu'), 1)} |")
    md += ["", f"nginx's own CPU per request (direct run): {f(med('http', c, 'direct', 'cpu'), 1)} µs", ""]

tc = int(tls_c)
if any(tb == "https" for (tb, _, _) in runs):
    plain = med("https", tc, "sidekey_http", "cpu")
    md += [f"## HTTPS through sidekey, {tc} connections (plain HTTP: wrk; HTTPS: examples/bench_client, keep-alive, leaf cached)", "",
           "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU vs plain HTTP | peak RSS MiB | non-2xx | nginx CPU µs/req |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in ["sidekey_http", "sidekey_intercept", "sidekey_tunnel", "direct_tls"]:
        if ("https", tc, t) not in runs:
            continue
        cpu = med("https", tc, t, "cpu")
        ratio = f"{cpu / plain:.2f}x" if plain and t != "direct_tls" else "-"
        md.append(f"| {LABEL[t]} | {f(med('https', tc, t, 'rps'))} | {f(med('https', tc, t, 'p50'), 3)} | {f(med('https', tc, t, 'p99'), 3)} "
                  f"| {f(cpu, 1)} | {ratio} | {f(med('https', tc, t, 'rss'), 1)} | {worst('https', tc, t, 'non2xx') + worst('https', tc, t, 'sock')} "
                  f"| {f(med('https', tc, t, 'ncpu'), 1)} |")
    md += ["", "(direct TLS: the proxy CPU column is nginx's own.)", ""]

# Targets from issue 12.
checks = []
def target(desc, ok, detail):
    checks.append(f"| {desc} | {'n/a' if ok is None else ('met' if ok else '**missed**')} | {detail} |")
def get(table, c, t, k):
    return med(table, c, t, k) if (table, c, t) in runs else None
sk_cpu, ng_cpu = get("http", 50, "sidekey", "cpu"), get("http", 50, "direct", "cpu")
sk_rps, sq_rps, tp_rps = get("http", 50, "sidekey", "rps"), get("http", 50, "squid", "rps"), get("http", 50, "tinyproxy", "rps")
sk_p99, sq_p99 = get("http", 50, "sidekey", "p99"), get("http", 50, "squid", "p99")
sk_p50, d_p50 = get("http", 1, "sidekey", "p50"), get("http", 1, "direct", "p50")
ic, pc = get("https", tc, "sidekey_intercept", "cpu"), get("https", tc, "sidekey_http", "cpu")
have = lambda *v: all(x is not None for x in v)
target("c=50: sidekey CPU/req <= 12 µs", sk_cpu <= 12 if have(sk_cpu) else None, f"{f(sk_cpu, 1)} µs")
target("c=50: sidekey CPU/req <= 2x nginx's own", sk_cpu <= 2 * ng_cpu if have(sk_cpu, ng_cpu) else None,
       f"{f(sk_cpu, 1)} vs {f(ng_cpu, 1)} µs ({f(sk_cpu / ng_cpu if have(sk_cpu, ng_cpu) and ng_cpu else None, 2)}x)")
target("c=50: sidekey req/s >= 4x squid", sk_rps >= 4 * sq_rps if have(sk_rps, sq_rps) else None,
       f"{f(sk_rps / sq_rps if have(sk_rps, sq_rps) else None, 2)}x")
target("c=50: sidekey req/s >= 8x tinyproxy", sk_rps >= 8 * tp_rps if have(sk_rps, tp_rps) else None,
       f"{f(sk_rps / tp_rps if have(sk_rps, tp_rps) else None, 2)}x")
target("c=50: sidekey p99 <= squid's", sk_p99 <= sq_p99 if have(sk_p99, sq_p99) else None,
       f"{f(sk_p99, 3)} vs {f(sq_p99, 3)} ms")
target("c=1: sidekey p50 <= direct p50 + 25 µs", (sk_p50 - d_p50) * 1000 <= 25 if have(sk_p50, d_p50) else None,
       f"+{f((sk_p50 - d_p50) * 1000 if have(sk_p50, d_p50) else None)} µs")
target(f"HTTPS c={tc}: intercepted CPU/req <= 1.5x plain HTTP", ic <= 1.5 * pc if have(ic, pc) else None,
       f"{f(ic, 1)} vs {f(pc, 1)} µs ({f(ic / pc if have(ic, pc) and pc else None, 2)}x)")
ha_cpu, ha_p50 = get("http", 50, "haproxy", "cpu"), get("http", 1, "haproxy", "p50")
target("c=50: sidekey CPU/req <= HAProxy's", sk_cpu <= ha_cpu if have(sk_cpu, ha_cpu) else None,
       f"{f(sk_cpu, 1)} vs {f(ha_cpu, 1)} µs")
target("c=1: sidekey added p50 <= HAProxy's", sk_p50 <= ha_p50 if have(sk_p50, ha_p50) else None,
       f"+{f((sk_p50 - d_p50) * 1000 if have(sk_p50, d_p50) else None)} vs "
       f"+{f((ha_p50 - d_p50) * 1000 if have(ha_p50, d_p50) else None)} µs")
md += ["## Targets", "", "| target | this run | value |", "|---|---|---|"] + checks + [""]
if int(nfail):
    md += [f"**WARNING: {nfail} run(s) had non-2xx responses or no requests: a proxy did not inject "
           "the header or failed. Those numbers are not comparable.**", ""]

text = "\n".join(md)
open(out, "w").write(text)
print("\n" + text)
PY
echo "written to $OUT"
if ((${#failures[@]})); then
    echo >&2
    echo "!!!!!!!! ${#failures[@]} run(s) had non-2xx responses or no requests:" >&2
    printf '!!!   %s\n' "${failures[@]}" >&2
    exit 1
fi
