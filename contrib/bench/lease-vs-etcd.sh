#!/bin/sh
# Leases, Ferrium against etcd 3.4 on this machine, with one client for both
# (`ferrium-bench ... lease`, `--etcd` for etcd): one node of each (Ferrium
# from the dev build or $FERRIUM_BIN_DIR with etc/examples/single-node.toml;
# etcd from $ETCD, default `etcd`; fsync on as both ship), LEASES leases
# granted, then three runs of SECONDS each:
#
#   1. keep-alives as fast as they are answered (16 streams, 64 in flight
#      on each): keep-alives per second and their latency;
#   2. every lease renewed once every 10 s (LEASES / 10 keep-alives/s, what
#      clients with a 30 s TTL send): the server's CPU;
#   3. the leases held with (almost) no keep-alive: the server's CPU for
#      merely holding them (the TTL, 600 s, is longer than the run).
#
# The server's CPU is read from /proc/PID/stat while the keep-alives run
# (between the markers ferrium-bench prints), not while granting.
#
#   contrib/bench/lease-vs-etcd.sh [LEASES] [SECONDS]
#
# Defaults: 10000 leases, 20 s. Data in ./data/lease-bench, deleted after.
set -eu
cd "$(dirname "$0")/../.."
LEASES=${1:-10000}
SECS=${2:-20}
BIN="${FERRIUM_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
ETCD=${ETCD:-etcd}
RUN=./data/lease-bench
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }

rm -rf "$RUN" ./data/single-node
mkdir -p "$RUN"
run() { # LABEL PID ENDPOINT BENCH-ARGS...
    label=$1 pid=$2 ep=$3
    shift 3
    "$BIN/ferrium-bench" --protocol grpc --endpoints "$ep" --leases "$LEASES" -c 16 \
        -d "$SECS" "$@" lease >"$RUN/out" 2>&1 &
    b=$!
    until grep -q 'renewing them' "$RUN/out" 2>/dev/null; do
        kill -0 "$b" 2>/dev/null || { cat "$RUN/out"; exit 1; }
        sleep 0.05 # polling for the start of the keep-alives
    done
    c0=$(ticks "$pid") t0=$(now)
    until grep -q 'revoking' "$RUN/out" 2>/dev/null; do
        kill -0 "$b" 2>/dev/null || { cat "$RUN/out"; exit 1; }
        sleep 0.05 # polling for the end of the keep-alives
    done
    c1=$(ticks "$pid") t1=$(now)
    wait "$b" || { cat "$RUN/out"; exit 1; }
    grep -v '^ferrium-bench: ' "$RUN/out"
    awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v l="$label" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%s: server CPU %.2f s in %.1f s (%.1f%% of one core)\n", l, (b - a) / hz, e - s, 100 * (b - a) / hz / (e - s)}'
}
suite() { # PID ENDPOINT [--etcd]
    pid=$1 ep=$2
    shift 2
    run "full speed" "$pid" "$ep" "$@" --streams 16 --concurrency 64
    run "every lease every 10 s" "$pid" "$ep" "$@" --streams 16 --concurrency 64 \
        --rate $((LEASES / 10)) --lease-ttl 30
    run "held, no keep-alives" "$pid" "$ep" "$@" --streams 1 --concurrency 1 --rate 1 \
        --lease-ttl 600
}

echo "== Ferrium"
"$BIN/ferrium-server" --config etc/examples/single-node.toml >"$RUN/ferrium.log" 2>&1 &
fpid=$!
until curl -sf -m 2 -X POST http://127.0.0.1:8001/write -d '{"Set":{"key":"warm-up","value":"x"}}' >/dev/null 2>&1; do
    sleep 0.1 # polling for a leader that accepts writes
done
suite "$fpid" 127.0.0.1:9001
kill "$fpid"
wait 2>/dev/null || true

echo "== etcd"
"$ETCD" --name e1 --data-dir "$RUN/e1" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster e1=http://127.0.0.1:2380 >"$RUN/etcd.log" 2>&1 &
epid=$!
until ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 put warm-up x >/dev/null 2>&1; do
    sleep 0.1 # polling for a leader that accepts writes
done
suite "$epid" 127.0.0.1:2379 --etcd
kill "$epid"
wait 2>/dev/null || true
rm -rf "$RUN" ./data/single-node
