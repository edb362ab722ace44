#!/usr/bin/env bash
# Measures on-disk storage per live key for a single Ferrium node and a single
# etcd 3.4 node given the same workload: KEYS keys (default 100,000) with
# 100-byte values, each written ROUNDS times (default 10: every key once, then
# 9 rounds of overwrites with new values), fsync on (both defaults). Ferrium
# gets BatchSets of 1,000 pairs (POST /write), etcd txns of 128 puts (POST
# /v3/kv/txn), each over CONNS persistent connections (default 4), one round
# after the other. Sizes are `du -sb` of each whole data directory (Ferrium:
# RocksDB, Raft log and snapshots; etcd: bbolt, WAL and snapshots):
#   ferrium  after load          default history retention (1 h / 1,000,000 revisions)
#   ferrium  after compact       `ferriumctl compact REV` at the last write's
#                                revision, then until du stops changing (3 equal
#                                readings 2 s apart, at most 120 s)
#   etcd     after load
#   etcd     after compact+defrag `etcdctl compact --physical REV`, `etcdctl defrag`
# Prints a table (store, phase, bytes on disk, bytes per live key) and the wall
# time of each load; the sizes of each data directory's parts go to
# breakdown.txt in the work directory.
#
#   contrib/bench/storage-per-key.sh
#   FERRIUM_BIN_DIR=/tmp/bench-bin contrib/bench/storage-per-key.sh
#   KEYS=10000 ROUNDS=3 contrib/bench/storage-per-key.sh     # quick check
#
# Needs etcd 3.4 and etcdctl (Debian: apt-get install etcd-server etcd-client;
# stop the service the package may start: systemctl stop etcd), python3, curl,
# and the Ferrium binaries ferrium-server and ferriumctl in FERRIUM_BIN_DIR
# (default target/debug; this script builds nothing). Ports are free ones
# chosen by the kernel just before each server starts. Everything lives in a
# new directory under $TMPDIR or /tmp; servers are stopped and data
# directories deleted on exit (KEEP=1 keeps them), logs are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."

FERRIUM_BIN_DIR=${FERRIUM_BIN_DIR:-target/debug}
KEYS=${KEYS:-100000}
ROUNDS=${ROUNDS:-10}
CONNS=${CONNS:-4}
VALUE_SIZE=100
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/storage-per-key.XXXXXX")
SERVER="$FERRIUM_BIN_DIR/ferrium-server"
CTL="$FERRIUM_BIN_DIR/ferriumctl"

for f in "$SERVER" "$CTL"; do
    [ -x "$f" ] || { echo "missing: $f (set FERRIUM_BIN_DIR)" >&2; exit 1; }
done
for tool in etcd etcdctl python3 curl du; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
ETCD_VERSION=$(etcd --version | awk '/^etcd Version/ { print $3 }')
case $ETCD_VERSION in
    3.4.*) ;;
    *) echo "warning: etcd $ETCD_VERSION, not 3.4" >&2 ;;
esac
export ETCDCTL_API=3

pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORKDIR/ferrium-data" "$WORKDIR/etcd-data"
    echo "logs: $WORKDIR" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
disk() { du -sb "$1" | cut -f1; }
breakdown() { # label dir: sizes of its top-level entries, to $WORKDIR/breakdown.txt
    { echo "== $1"; du -sb "$2"/* | sed "s|$WORKDIR/||"; } >>"$WORKDIR/breakdown.txt"
}
stop() { # pid: SIGTERM and wait
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
wait_until() { # seconds what command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for $what" >&2; exit 1; }
        sleep 0.2
    done
}

rows=()
row() { # store phase bytes
    rows+=("$(printf '%-8s %-34s %14s %12s' "$1" "$2" "$3" \
        "$(awk -v b="$3" -v k="$KEYS" 'BEGIN { printf "%.1f", b / k }')")")
}

# Writes every key once per round, rounds one after the other; in a round,
# CONNS threads each send batches over one persistent connection. Prints the
# highest revision any answer reported.
cat > "$WORKDIR/load.py" <<'PY'
import base64, http.client, json, sys, threading
kind, addr, keys, rounds, conns, vsize = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
host, port = addr.rsplit(":", 1)
batch = 1000 if kind == "ferrium" else 128  # etcd's default --max-txn-ops is 128
b64 = lambda s: base64.b64encode(s.encode()).decode()

def body(rnd, lo, hi):
    pairs = []
    for n in range(lo, hi):
        k = "key/%06d" % n
        v = ("round%02d %s " % (rnd, k)).ljust(vsize, ".")
        assert len(v) == vsize
        pairs.append((k, v))
    if kind == "ferrium":
        return "/write", {"BatchSet": {"pairs": pairs}}
    return "/v3/kv/txn", {"success": [{"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in pairs]}

top, failed, lock = 0, [], threading.Lock()
def worker(work):
    global top
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    while not failed:
        with lock:
            if not work:
                return
            rnd, lo, hi = work.pop()
        path, b = body(rnd, lo, hi)
        c.request("POST", path, json.dumps(b), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            failed.append("%d %s" % (r.status, data[:300]))
            return
        a = json.loads(data)
        if kind == "ferrium":
            if a.get("count") != hi - lo:
                failed.append("unexpected answer %s" % data[:300])
                return
            rev = int(a["revision"])
        else:
            rev = int(a["header"]["revision"])
        with lock:
            top = max(top, rev)

for rnd in range(rounds):
    work = [(rnd, lo, min(lo + batch, keys)) for lo in range(0, keys, batch)]
    work.reverse()
    threads = [threading.Thread(target=worker, args=(work,)) for _ in range(conns)]
    for t in threads: t.start()
    for t in threads: t.join()
    if failed:
        sys.exit("%s load failed in round %d: %s" % (kind, rnd, failed[0]))
print(top)
PY

# The value the last round wrote to key $1 starts with this.
last_prefix=$(printf 'round%02d ' $((ROUNDS - 1)))
last_key=$(printf 'key/%06d' $((KEYS - 1)))

echo "workdir $WORKDIR; $KEYS keys x $ROUNDS writes of $VALUE_SIZE-byte values; $CONNS connections; $(nproc) CPUs" >&2

# --- Ferrium ------------------------------------------------------------------

FDIR="$WORKDIR/ferrium-data"
FHTTP=$(free_port)
FGRPC=$(free_port)
while [ "$FGRPC" = "$FHTTP" ]; do FGRPC=$(free_port); done
cat > "$WORKDIR/ferrium.toml" <<CONF
[node]
id = 1
data_dir = "$FDIR"
http_addr = "127.0.0.1:$FHTTP"
grpc_addr = "127.0.0.1:$FGRPC"

[cluster]
name = "spk"
initial_members = [ { id = 1, http_addr = "127.0.0.1:$FHTTP", grpc_addr = "127.0.0.1:$FGRPC" } ]
CONF
FLOG="$WORKDIR/ferrium.log"
env -u FERRIUM_BIN_DIR "$SERVER" --config "$WORKDIR/ferrium.toml" >>"$FLOG" 2>&1 &
fpid=$!
pids+=("$fpid")
ferrium_ready() {
    kill -0 "$fpid" 2>/dev/null || { echo "ferrium-server exited; see $FLOG" >&2; tail -30 "$FLOG" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "http://127.0.0.1:$FHTTP/ready")" = 200 ]
}
wait_until 60 "ferrium /ready" ferrium_ready
echo "ferrium ready on 127.0.0.1:$FHTTP; loading" >&2

t0=$(now)
frev=$(python3 "$WORKDIR/load.py" ferrium "127.0.0.1:$FHTTP" "$KEYS" "$ROUNDS" "$CONNS" "$VALUE_SIZE")
fload=$(since "$t0")
f_loaded=$(disk "$FDIR")
row ferrium "after load (default retention)" "$f_loaded"
breakdown "ferrium after load" "$FDIR"

"$CTL" -e "127.0.0.1:$FHTTP" get "$last_key" | grep -q "^$last_prefix" ||
    { echo "ferrium: $last_key does not hold the last round's value" >&2; exit 1; }
read -r live range_rev < <(curl -sf -X POST "http://127.0.0.1:$FHTTP/range" -H 'Content-Type: application/json' \
    -d '{"key":"key/","prefix":true,"count_only":true}' |
    python3 -c 'import json, sys; a = json.load(sys.stdin); print(a["count"], a["header"]["revision"])')
[ "$live" = "$KEYS" ] || { echo "ferrium: $live live keys, expected $KEYS" >&2; exit 1; }
echo "ferrium load: ${fload}s, last write revision $frev, /range header.revision $range_rev, $f_loaded bytes" >&2

"$CTL" -e "127.0.0.1:$FHTTP" compact "$frev" >"$WORKDIR/ferrium-compact.txt"
# Poll until 3 equal readings in a row, 2 s apart, at most 120 s.
t0=$(now)
prev=-1 same=0 settled=no
while :; do
    cur=$(disk "$FDIR")
    echo "$(since "$t0") $cur" >>"$WORKDIR/ferrium-compact.txt"
    if [ "$cur" = "$prev" ]; then same=$((same + 1)); else same=1; fi
    prev=$cur
    if [ "$same" -ge 3 ]; then settled=yes; break; fi
    [ "$(awk -v t="$(since "$t0")" 'BEGIN { print (t >= 120) }')" = 0 ] || break
    sleep 2
done
fwait=$(since "$t0")
f_compacted=$cur
breakdown "ferrium after compact" "$FDIR"
if [ "$settled" = yes ]; then
    row ferrium "after compact (stable ${fwait}s)" "$f_compacted"
else
    row ferrium "after compact (unstable, ${fwait}s)" "$f_compacted"
fi
"$CTL" -e "127.0.0.1:$FHTTP" get "$last_key" | grep -q "^$last_prefix" ||
    { echo "ferrium: $last_key lost after compaction" >&2; exit 1; }
stop "$fpid"
if [ "$f_compacted" -ge "$f_loaded" ] || [ "$settled" != yes ]; then
    echo "warning: ferrium did not shrink or settle after compaction ($f_loaded -> $f_compacted bytes, settled: $settled); du readings in $WORKDIR/ferrium-compact.txt; last 30 lines of its log:" >&2
    tail -30 "$FLOG" >&2
fi

# --- etcd ---------------------------------------------------------------------

EDIR="$WORKDIR/etcd-data"
ECLIENT=$(free_port)
EPEER=$(free_port)
while [ "$EPEER" = "$ECLIENT" ]; do EPEER=$(free_port); done
ELOG="$WORKDIR/etcd.log"
etcd --data-dir "$EDIR" \
    --listen-client-urls "http://127.0.0.1:$ECLIENT" --advertise-client-urls "http://127.0.0.1:$ECLIENT" \
    --listen-peer-urls "http://127.0.0.1:$EPEER" --initial-advertise-peer-urls "http://127.0.0.1:$EPEER" \
    --initial-cluster "default=http://127.0.0.1:$EPEER" >>"$ELOG" 2>&1 &
epid=$!
pids+=("$epid")
ectl() { etcdctl --endpoints="http://127.0.0.1:$ECLIENT" "$@"; }
etcd_ready() {
    kill -0 "$epid" 2>/dev/null || { echo "etcd exited; see $ELOG" >&2; tail -30 "$ELOG" >&2; exit 1; }
    ectl endpoint health >/dev/null 2>&1
}
wait_until 60 "etcd health" etcd_ready
echo "etcd $ETCD_VERSION ready on 127.0.0.1:$ECLIENT; loading" >&2

t0=$(now)
erev=$(python3 "$WORKDIR/load.py" etcd "127.0.0.1:$ECLIENT" "$KEYS" "$ROUNDS" "$CONNS" "$VALUE_SIZE")
eload=$(since "$t0")
e_loaded=$(disk "$EDIR")
row etcd "after load" "$e_loaded"
breakdown "etcd after load" "$EDIR/member"
ectl get --print-value-only "$last_key" | grep -q "^$last_prefix" ||
    { echo "etcd: $last_key does not hold the last round's value" >&2; exit 1; }
echo "etcd load: ${eload}s, last write revision $erev, $e_loaded bytes" >&2

ectl --command-timeout=600s compact --physical "$erev" >"$WORKDIR/etcd-compact.txt"
e_compacted=$(disk "$EDIR")
ectl --command-timeout=600s defrag >>"$WORKDIR/etcd-compact.txt"
e_defragged=$(disk "$EDIR")
breakdown "etcd after compact + defrag" "$EDIR/member"
row etcd "after compact" "$e_compacted"
row etcd "after compact + defrag" "$e_defragged"
ectl get --print-value-only "$last_key" | grep -q "^$last_prefix" ||
    { echo "etcd: $last_key lost after compaction" >&2; exit 1; }
stop "$epid"

# --- results ------------------------------------------------------------------

echo
echo "Ferrium vs etcd $ETCD_VERSION, single node each, fsync on: $KEYS keys, $VALUE_SIZE-byte values, each written $ROUNDS times"
printf '%-8s %-34s %14s %12s\n' store phase "bytes on disk" "bytes/key"
printf '%s\n' "${rows[@]}"
echo "load wall time: ferrium ${fload}s (BatchSet of 1000), etcd ${eload}s (txn of 128), $CONNS connections each"
