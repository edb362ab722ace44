#!/bin/sh
# Watch, Ferrium against etcd on this machine, with one client for both
# (`ferrium-bench ... watch`, `--etcd` for etcd): a fresh three-node cluster
# of each (Ferrium from the dev build or $FERRIUM_BIN_DIR, with
# etc/examples/cluster/node{1,2,3}.toml; etcd 3.4 from $ETCD, default
# `etcd`, fsync on as both ship), watches on a follower of each, and the
# follower's RSS before and under the load.
#
#   contrib/bench/watch-vs-etcd.sh [WATCHERS] [STREAMS] [KEYS] [RATE] [SECONDS]
#
# Defaults: 10000 watchers on 200 streams over 1000 keys, 1000 writes/s
# (one per key per second), 20 s. RATE 0 writes as fast as $CONNS writers
# can (default 16). Data in ./data/watch-bench, deleted after.
set -eu
cd "$(dirname "$0")/../.."
WATCHERS=${1:-10000}
STREAMS=${2:-200}
KEYS=${3:-1000}
RATE=${4:-1000}
SECS=${5:-20}
CONNS=${CONNS:-16}
BIN="${FERRIUM_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
ETCD=${ETCD:-etcd}
RUN=./data/watch-bench
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1024}' "/proc/$1/status"; }

rm -rf "$RUN" ./data/node1 ./data/node2 ./data/node3
mkdir -p "$RUN"
bench() { # ENDPOINT PID [--etcd]
    ep=$1 pid=$2
    shift 2
    before=$(rss "$pid")
    rate=""
    [ "$RATE" = 0 ] || rate="--rate $RATE"
    # shellcheck disable=SC2086 # $rate is empty or two words
    "$BIN/ferrium-bench" --protocol grpc "$@" --endpoints "$ep" --key-space "$KEYS" \
        --watchers "$WATCHERS" --streams "$STREAMS" $rate -c "$CONNS" -d "$SECS" watch \
        >"$RUN/out" 2>&1 &
    b=$!
    sleep $((SECS / 2 + 1))
    during=$(rss "$pid")
    wait "$b" || { cat "$RUN/out"; exit 1; }
    cat "$RUN/out"
    echo "RSS of the watched member: $before before, $during under load"
}

echo "== Ferrium"
for n in 1 2 3; do
    "$BIN/ferrium-server" --config "etc/examples/cluster/node$n.toml" >"$RUN/ferrium$n.log" 2>&1 &
    echo $! >"$RUN/ferrium$n.pid"
done
until curl -sf -m 2 -X POST http://127.0.0.1:8001/write -d '{"Set":{"key":"warm-up","value":"x"}}' >/dev/null 2>&1; do
    sleep 0.1 # polling for a leader that accepts writes
done
leader=$(curl -s http://127.0.0.1:8001/leader | sed 's/.*"leader":\([0-9]*\).*/\1/')
f=1
[ "$leader" = 1 ] && f=2
bench "127.0.0.1:900$f" "$(cat "$RUN/ferrium$f.pid")"
for n in 1 2 3; do kill "$(cat "$RUN/ferrium$n.pid")"; done
wait 2>/dev/null || true

echo "== etcd"
cluster=e1=http://127.0.0.1:21380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:23380
for i in 1 2 3; do
    "$ETCD" --name "e$i" --data-dir "$RUN/e$i" \
        --listen-client-urls "http://127.0.0.1:2${i}379" --advertise-client-urls "http://127.0.0.1:2${i}379" \
        --listen-peer-urls "http://127.0.0.1:2${i}380" --initial-advertise-peer-urls "http://127.0.0.1:2${i}380" \
        --initial-cluster "$cluster" --initial-cluster-state new >"$RUN/etcd$i.log" 2>&1 &
    echo $! >"$RUN/etcd$i.pid"
done
until ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:21379 put warm-up x >/dev/null 2>&1; do
    sleep 0.1 # polling for a leader that accepts writes
done
f=1
ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:21379 endpoint status | grep -q ', true,' && f=2
bench "127.0.0.1:2${f}379" "$(cat "$RUN/etcd$f.pid")" --etcd
for i in 1 2 3; do kill "$(cat "$RUN/etcd$i.pid")"; done
wait 2>/dev/null || true
rm -rf "$RUN" ./data/node1 ./data/node2 ./data/node3
