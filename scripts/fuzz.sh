#!/usr/bin/env bash
# Fuzzes sidekey's parsers (issue 12): each target in fuzz/ for SECONDS
# (default 60), one after the other, on the nightly toolchain via
# cargo-fuzz (installed here if missing).
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
# Targets: config_load template token_response route_match inbound_target.
# Corpora grow in fuzz/corpus/TARGET (seeded here on first use), crashes
# land in fuzz/artifacts/TARGET; both are git-ignored, never commit them.
# A crash is minimized (cargo fuzz tmin) and the script exits 1 at the
# end; turn each into a stable test in tests/fuzz_regressions.rs.
# SIDEKEY_FUZZ_KNOWN=class,class lets a run go past findings already
# reported (classes are the text before ':' in a finding, see
# src/fuzz/mod.rs). Bounded: SECONDS per target, one process at a time,
# loopback only (token_response talks to its own endpoint on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-60}
shift || true
ALL=(config_load template token_response route_match inbound_target)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi

# Seeds: a few valid inputs per target, so the fuzzer starts from the
# shapes that matter instead of from nothing. Written only into an empty
# corpus (the corpus itself is never committed).
seed() { # target name printf-format
    local dir=fuzz/corpus/$1
    mkdir -p "$dir"
    # shellcheck disable=SC2059
    printf "$3" > "$dir/seed-$2"
}
seed_all() {
    local t=$1
    [ -n "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ] && return 0
    case $t in
    config_load)
        mkdir -p fuzz/corpus/config_load
        cp proxy.toml fuzz/corpus/config_load/seed-proxy.toml
        for f in tests/fixtures/*.toml; do
            [ -f "$f" ] && cp "$f" "fuzz/corpus/config_load/seed-$(basename "$f")"
        done
        seed config_load custom '[clients.c]\ngrant = "custom"\ntoken_url = "http://127.0.0.1:1/t"\nclient_id = "<<env.SET>>"\nclient_secret = "s"\nbody = %s\ntoken_path = "data.accessToken"\nexpires_in_path = "data.ttl"\n[[routes]]\nname = "r"\nhosts = ["*.example.com:8080", "10.0.0.1"]\npath_prefix = "/v2/"\nmethods = ["GET"]\nmatch_headers = { "X-Org" = "eu" }\nclient = "c"\nset_headers = { Authorization = "<<oauth.tokenType>> <<oauth.token>>", X-Sub = "<<oauth.tokenDecoded.sub>>" }\nremove_headers = ["X-Org"]\n' "'{\"key\": \"<<client.client_id>>\", \"secret\": <<client.client_secret>>}'"
        ;;
    template)
        seed template header '\000Bearer <<oauth.token>> <<oauth.tokenDecoded.org.id>>\000tok\000Bearer\000id\000{"org":{"id":7}}'
        seed template json '\002{"key": "<<client.client_id>>", "n": <<client.client_secret>>, "e": "<<env.V0>>"}\000a"b\000c\\\\d\nx'
        seed template form '\202grant_type=x&id=<<client.client_id>>&s=<<client.client_secret>>\000a&b=c\000%%20'
        seed template field '\001<<env.UNSET:-fallback>>-<<env.SET>>'
        ;;
    token_response)
        seed token_response oauth '\000\000{"access_token":"t","token_type":"bearer","expires_in":3600,"refresh_token":"r","id_token":"a.eyJzdWIiOiJ4In0.s","scope":"a b"}'
        seed token_response oauth-error '\000\003{"error":"invalid_client","error_description":"no"}'
        seed token_response capillary '\001\000{"data":{"accessToken":"t","ttlSeconds":900},"errors":null}'
        seed token_response custom '\202\000data.list.0.t|data.ttl\n{"data":{"list":[{"t":"x"}],"ttl":"60"}}'
        seed token_response raw '\100\000a.eyJleHAiOjQxMDI0NDQ4MDB9.s\000\000a.eyJzdWIiOiJ4In0.s'
        ;;
    route_match)
        seed route_match basic 'api.example.com,*.example.com:8080|/v2/|GET,POST|x-org=eu\n*.b.example.com||\n127.0.0.1:8080,::1||\n--\na.b.example.com|8080|GET|/v2/x?y=1|x-org=eu'
        ;;
    inbound_target)
        seed inbound_target abs '\000http://API.example.com:8080/x?y'
        seed inbound_target connect '\000example.com:443'
        seed inbound_target v6 '\000http://[::1]:81/'
        seed inbound_target auth '\001Basic YXBwOnB3'
        seed inbound_target hop '\002connection: x-a, te\nx-a: 1\nte: gzip, trailers\nkeep-alive: 5\nhost: a\n'
        ;;
    esac
}

failed=()
for t in "${TARGETS[@]}"; do
    seed_all "$t"
    echo "=== $t: ${SECONDS_EACH}s"
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
    log=$(mktemp)
    set +e
    cargo +nightly fuzz run "$t" -- -max_total_time="$SECONDS_EACH" -timeout=20 \
        -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "${dict[@]}" > "$log" 2>&1
    rc=$?
    set -e
    grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        # The panic message: a finding (`class: details`) or the parser's own.
        grep -A1 'panicked at' "$log" | head -4 || true
        artifact=$(grep -o '[^ ]*fuzz/artifacts/[^ ]*' "$log" | tail -1 || true)
        if [ -n "$artifact" ] && [ -f "$artifact" ]; then
            echo "--- crash input: $artifact; minimizing"
            cargo +nightly fuzz tmin "$t" "$artifact" -- -runs=5000 > "$log" 2>&1 || true
            grep -E 'CRASH_MIN: minimizing crash input|Minimized artifact|minimized-from' "$log" | tail -2 || true
        fi
    fi
    rm -f "$log"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (see fuzz/artifacts/)"
    exit 1
fi
echo "no crash in: ${TARGETS[*]} (${SECONDS_EACH}s each)"
