#!/bin/sh
# A local three-node cluster from etc/examples/cluster/node{1,2,3}.toml.
#
#   contrib/dev-cluster.sh start    build, start three nodes, wait for a leader
#   contrib/dev-cluster.sh status   show each node's role, term and indexes
#   contrib/dev-cluster.sh test     write on every node, read back everywhere
#   contrib/dev-cluster.sh stop     stop the nodes (SIGTERM), keep their data
#   contrib/dev-cluster.sh clean    stop and delete the data (./data/node*)
#
# Nodes listen on 127.0.0.1:8001-8003 (HTTP) and :9001-9003 (gRPC); their
# logs and pid files go to ./data/dev-cluster/.
set -eu
cd "$(dirname "$0")/.."

RUN=./data/dev-cluster
BIN="${CARGO_TARGET_DIR:-target}/debug/ferrium-server"
NODES="1 2 3"

http() { # METHOD PORT PATH [BODY]
    if [ $# -ge 4 ]; then
        curl -sS -m 10 -X "$1" -H 'Content-Type: application/json' -d "$4" "http://127.0.0.1:$2$3"
    else
        curl -sS -m 10 -X "$1" "http://127.0.0.1:$2$3"
    fi
}

start() {
    cargo build --bin ferrium-server
    mkdir -p "$RUN"
    for n in $NODES; do
        if [ -f "$RUN/node$n.pid" ] && kill -0 "$(cat "$RUN/node$n.pid")" 2>/dev/null; then
            echo "node $n already running (pid $(cat "$RUN/node$n.pid"))"
            continue
        fi
        "$BIN" --config "etc/examples/cluster/node$n.toml" >>"$RUN/node$n.log" 2>&1 &
        echo $! >"$RUN/node$n.pid"
        echo "node $n started (pid $!), log $RUN/node$n.log"
    done
    i=0
    while [ $i -lt 100 ]; do
        leader=$(http GET 8001 /leader 2>/dev/null | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
        if [ -n "$leader" ]; then
            echo "cluster up: leader is node $leader"
            return 0
        fi
        i=$((i + 1))
        sleep 0.2
    done
    echo "no leader after 20s; see the logs in $RUN/" >&2
    exit 1
}

status() {
    for n in $NODES; do
        printf 'node %s: ' "$n"
        http GET "800$n" /metrics 2>/dev/null || printf 'not answering'
        echo
    done
}

check() {
    for n in $NODES; do
        http POST "800$n" /write "{\"Set\":{\"key\":\"dev-cluster-$n\",\"value\":\"written via node $n\"}}" >/dev/null
    done
    for n in $NODES; do
        for k in $NODES; do
            got=$(http POST "800$n" /read "{\"key\":\"dev-cluster-$k\"}")
            case "$got" in
                *"written via node $k"*) ;;
                *) echo "FAIL: node $n read dev-cluster-$k: $got" >&2; exit 1 ;;
            esac
        done
    done
    echo "ok: writes on every node are readable (linearizable) on every node"
}

stop() {
    for n in $NODES; do
        if [ -f "$RUN/node$n.pid" ]; then
            pid=$(cat "$RUN/node$n.pid")
            if kill -TERM "$pid" 2>/dev/null; then
                i=0
                while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
                echo "node $n stopped"
            fi
            rm -f "$RUN/node$n.pid"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    status) status ;;
    test) check ;;
    stop) stop ;;
    clean) stop; rm -rf ./data/node1 ./data/node2 ./data/node3 "$RUN" ;;
    *) echo "usage: $0 start|status|test|stop|clean" >&2; exit 2 ;;
esac
