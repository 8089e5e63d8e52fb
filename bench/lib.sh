# Shared by the bench scripts (`. bench/lib.sh` from the repo root).

# A loopback port free right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 5 s for something to listen on 127.0.0.1:$1.
wait_listening() {
    for _ in $(seq 50); do
        (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null && return 0
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$1 after 5 s" >&2
    return 1
}

# $tmp, removed at exit together with every process in $pids.
bench_tmp() {
    tmp=$(mktemp -d)
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$tmp"' EXIT
}

# The static-header route of the CPU comparisons, listening on $2, to $1.
static_config() {
    cat > "$1" <<TOML
[proxy]
listen = "127.0.0.1:$2"
admin = ""
[[routes]]
name = "bench"
hosts = ["127.0.0.1"]
set_headers = { Authorization = "Bearer bench-token", "X-Team" = "platform" }
TOML
}
