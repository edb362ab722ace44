#!/bin/sh
# What a request id costs a write: rounds of `ferrium-bench put` with and
# without --request-ids against a fresh three-node dev cluster each
# (contrib/dev-cluster.sh), with the CPU time the three servers used per
# write (utime + stime from /proc, so the client's own CPU is not counted).
#
#   contrib/bench/request-ids.sh [ROUNDS] [SECONDS] [CONNECTIONS] [WORKLOAD]
#
# Defaults: 3 rounds of 8 s at 64 connections, workload put. Needs a dev
# build (cargo build --bins), or the binaries in FERRIUM_BIN_DIR. The nodes
# use etc/examples/cluster/node{1,2,3}.toml and their data in ./data/node*,
# deleted after each run. Prints one line per run and the medians.
set -eu
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
SECS=${2:-8}
CONNS=${3:-64}
WORK=${4:-put}
BIN="${FERRIUM_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}"
RUN=./data/request-ids-bench
TICK=$(getconf CLK_TCK)

server_ticks() { # the summed utime+stime of the dev cluster's servers
    t=0
    for n in 1 2 3; do
        pid=$(cat "$RUN/node$n.pid")
        # fields 14 and 15 of /proc/PID/stat, after the command name in ()
        s=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        t=$((t + s))
    done
    echo "$t"
}

stop() {
    for n in 1 2 3; do
        [ -f "$RUN/node$n.pid" ] && kill -TERM "$(cat "$RUN/node$n.pid")" 2>/dev/null || true
    done
    for n in 1 2 3; do
        [ -f "$RUN/node$n.pid" ] || continue
        while kill -0 "$(cat "$RUN/node$n.pid")" 2>/dev/null; do sleep 0.1; done
    done
    rm -rf ./data/node1 ./data/node2 ./data/node3 "$RUN"
}

start() {
    mkdir -p "$RUN"
    for n in 1 2 3; do
        "$BIN/ferrium-server" --config "etc/examples/cluster/node$n.toml" >>"$RUN/node$n.log" 2>&1 &
        echo $! >"$RUN/node$n.pid"
    done
    i=0
    until curl -sf -m 2 http://127.0.0.1:8001/leader 2>/dev/null | grep -q '"leader":[0-9]'; do
        i=$((i + 1))
        [ $i -lt 200 ] || { echo "no leader after 20 s; see $RUN/" >&2; exit 1; }
        sleep 0.1 # polling for a leader
    done
    # A leader that has committed a write: its first term's churn is over.
    until curl -sf -m 2 -X POST http://127.0.0.1:8001/write -d '{"Set":{"key":"warm-up","value":"x"}}' >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 400 ] || { echo "no write accepted after 40 s; see $RUN/" >&2; exit 1; }
        sleep 0.1 # polling for a leader that accepts writes
    done
}

run() { # ARGS...: one fresh cluster, one bench run; prints "rate cpu_us_per_write errors"
    stop
    start
    before=$(server_ticks)
    out=$("$BIN/ferrium-bench" --leader -c "$CONNS" -d "$SECS" --json "$@")
    after=$(server_ticks)
    stop
    echo "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
ticks, hz = int(sys.argv[1]), int(sys.argv[2])
n = r["requests"] - r.get("errors", 0)
print("%.0f %.1f %s" % (r["requests_per_s"], ticks / hz * 1e6 / max(n, 1), r.get("errors", 0)))
' "$((after - before))" "$TICK"
}

plain=""
ids=""
i=1
while [ "$i" -le "$ROUNDS" ]; do
    set -- $(run "$WORK")
    echo "round $i  $WORK                 $1 writes/s  $2 us server CPU/write  errors $3"
    plain="$plain $1:$2"
    set -- $(run --request-ids "$WORK")
    echo "round $i  --request-ids $WORK   $1 writes/s  $2 us server CPU/write  errors $3"
    ids="$ids $1:$2"
    i=$((i + 1))
done
python3 - "$plain" "$ids" <<'PY'
import statistics, sys
def parse(s):
    pairs = [p.split(":") for p in s.split()]
    return [float(a) for a, _ in pairs], [float(b) for _, b in pairs]
pr, pc = parse(sys.argv[1])
ir, ic = parse(sys.argv[2])
mr, mc = statistics.median(pr), statistics.median(pc)
nr, nc = statistics.median(ir), statistics.median(ic)
print("median  plain %.0f writes/s, %.1f us CPU/write" % (mr, mc))
print("median  ids   %.0f writes/s, %.1f us CPU/write" % (nr, nc))
print("cost of ids: %.1f%% throughput, %.1f%% server CPU per write" % ((1 - nr / mr) * 100, (nc / mc - 1) * 100))
PY
