#!/usr/bin/env bash
# Measures what each tuning profile under etc/examples trades: starts a
# three-node Ferrium cluster on loopback with the profile's settings (its
# [node] and [cluster] sections replaced by this script's), drives it with
# ferrium-bench, and prints one row per profile:
#
#   writes/s and p50/p99 latency at 1 and 64 connections (fsync on in all),
#   linearizable reads/s at 64 connections, the time a new leader takes to
#   serve after the leader is killed, and resident memory and data directory
#   size per node after the run.
#
#   contrib/bench/profiles.sh                      # 10 s per measurement
#   DURATION=30 contrib/bench/profiles.sh
#   PROFILES="etc/examples/low-latency.toml" contrib/bench/profiles.sh
#
# Ports 38001-38003 (HTTP) and 39001-39003 (gRPC) on 127.0.0.1; a scratch
# directory under $TMPDIR (kept, with the logs, when KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
PROFILES=${PROFILES:-"default etc/examples/high-throughput.toml etc/examples/high-durability.toml etc/examples/low-latency.toml"}
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/ferrium-profiles.XXXXXX")}

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferrium/target}
# Our crate at full optimisation, dependencies from the shared dev build (as
# compare-etcd.sh does).
assertions=()
for pkg in openraft validit ferrium; do
    assertions+=(--config "profile.dev.package.$pkg.debug-assertions=false")
done
CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_DEV_DEBUG=1 \
    cargo build --quiet "${assertions[@]}" --bin ferrium-server --bin ferrium-bench
SERVER="$CARGO_TARGET_DIR/debug/ferrium-server"
BENCH="$CARGO_TARGET_DIR/debug/ferrium-bench"

pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_all
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORKDIR"; else echo "kept $WORKDIR" >&2; fi
}
trap cleanup EXIT

members='initial_members = [
  { id = 1, http_addr = "127.0.0.1:38001", grpc_addr = "127.0.0.1:39001" },
  { id = 2, http_addr = "127.0.0.1:38002", grpc_addr = "127.0.0.1:39002" },
  { id = 3, http_addr = "127.0.0.1:38003", grpc_addr = "127.0.0.1:39003" },
]'

# The profile without its [node] and [cluster] sections.
settings() {
    [ "$1" = default ] && return 0
    awk '/^\[/ { skip = ($0 == "[node]" || $0 == "[cluster]") } !skip' "$1"
}

start_node() { # profile dir id
    local cfg="$2/node$3.toml"
    {
        settings "$1"
        printf '\n[node]\nid = %s\nhttp_addr = "127.0.0.1:3800%s"\ngrpc_addr = "127.0.0.1:3900%s"\ndata_dir = "%s/data%s"\n' \
            "$3" "$3" "$3" "$2" "$3"
        printf '\n[cluster]\n%s\n' "$members"
    } > "$cfg"
    "$SERVER" --config "$cfg" --log-level warn >> "$2/node$3.log" 2>&1 &
    pids[$3]=$!
}

leader_of() { # port -> leader id, or nothing
    curl -s --max-time 1 "http://127.0.0.1:$1/leader" | python3 -c \
        'import json,sys; l=json.load(sys.stdin).get("leader"); print(l if l is not None else "")' 2>/dev/null || true
}

wait_leader() { # ports... -> leader id
    local deadline=$((SECONDS + 30)) l
    while [ $SECONDS -lt $deadline ]; do
        for port in "$@"; do
            l=$(leader_of "$port")
            if [ -n "$l" ]; then echo "$l"; return 0; fi
        done
        sleep 0.05
    done
    echo "no leader within 30 s; logs in $WORKDIR" >&2
    return 1
}

bench() { # args... -> "req/s p50 p99"
    "$BENCH" --endpoints 127.0.0.1:38001,127.0.0.1:38002,127.0.0.1:38003 --json "$@" |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read().split("\n}\n")[0] + "\n}"); l=r["latency"] or {}; print("%.0f %.2f %.2f" % (r["requests_per_s"], l.get("p50_ms", 0), l.get("p99_ms", 0)))'
}

rss_mib() { # pid
    awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

printf '%-22s %9s %7s %7s %9s %7s %7s %9s %9s %8s %8s\n' profile \
    "w/s c=1" p50ms p99ms "w/s c=64" p50ms p99ms "lin c=64" "failover" "RSS MiB" "disk MiB"
for profile in $PROFILES; do
    name=$(basename "$profile" .toml)
    dir="$WORKDIR/$name"
    mkdir -p "$dir"
    for id in 1 2 3; do start_node "$profile" "$dir" "$id"; done
    leader=$(wait_leader 38001 38002 38003)
    read -r w1 w1p50 w1p99 < <(bench --leader -c 1 -d "$DURATION" --key-prefix "w1-" put)
    read -r w64 w64p50 w64p99 < <(bench --leader -c 64 -d "$DURATION" --key-prefix "w64-" put)
    read -r r64 _ _ < <(bench -c 64 -d "$DURATION" --key-prefix "w64-" --key-space 10000 get)
    rss=$(rss_mib "${pids[$leader]}")
    disk=$(du -sm "$dir/data$leader" | cut -f1)
    # Failover: kill -9 the leader, time until another node serves a write.
    kill -9 "${pids[$leader]}"
    wait "${pids[$leader]}" 2>/dev/null || true
    start=$(date +%s.%N)
    others=()
    for id in 1 2 3; do [ "$id" != "$leader" ] && others+=("3800$id"); done
    deadline=$((SECONDS + 30))
    until curl -s --max-time 1 -X POST "http://127.0.0.1:${others[0]}/write" \
        -H 'Content-Type: application/json' -d '{"Set":{"key":"failover","value":"x"}}' |
        grep -q revision; do
        [ $SECONDS -lt $deadline ] || break
        sleep 0.01
    done
    failover=$(python3 -c "import time; print('%.2fs' % (time.time() - $start))")
    stop_all
    printf '%-22s %9s %7s %7s %9s %7s %7s %9s %9s %8s %8s\n' "$name" \
        "$w1" "$w1p50" "$w1p99" "$w64" "$w64p50" "$w64p99" "$r64" "$failover" "$rss" "$disk"
done
echo "(${DURATION}s per measurement; RSS and disk of the leader after the run; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg))"
