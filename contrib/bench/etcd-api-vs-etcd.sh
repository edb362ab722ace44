#!/usr/bin/env bash
# etcd's v3 gRPC API, served by Ferrium and by etcd 3.4, driven by the same
# client: a three-node Ferrium cluster and a three-node etcd 3.4 cluster on
# loopback, both with their default settings (fsync on), and the same
# `ferrium-bench --protocol grpc --api etcd ...` command line against the
# leader's gRPC endpoint of each (Ferrium's gRPC port, etcd's client port),
# 100-byte values:
#
#   put      KV.Put at 1, 16, 64 and 256 clients (clients = connections x
#            requests in flight on each: -c N up to 16, then 16 connections
#            with N/16 in flight on each);
#   range    KV.Range of one key at 64 clients, linearizable and
#            serializable, uniform over READ_KEYS keys loaded beforehand
#            (with `ferrium-bench --api etcd batch`: Txns of 100 puts);
#   txn cas  KV.Txn at 64 clients: each client task compares its own key's
#            mod revision with the one its last write got and puts;
#   watch    10,000 watches (ten per key over 1,000 keys) on 200 Watch
#            streams of the leader, while 16 writers Put those keys at 1,000
#            writes/s through it: events received, delivery latency.
#
# Prints one table with both systems and the ratio (ferrium / etcd), then
# the same puts through Ferrium's own gRPC API (`KvService.Set`, `--api
# ferrium`, measured right after its etcd API's row at each client count)
# beside its etcd API's, which shows what the translation costs (OWN_API=0
# skips them). Every row also gives the CPU time the three
# servers of the measured system and the client spent per request (from
# /proc and the client's rusage), and each row runs after a WARMUP-second run
# of the same command.
#
#   contrib/bench/etcd-api-vs-etcd.sh                # 10 s per row
#   DURATION=30 contrib/bench/etcd-api-vs-etcd.sh
#   FERRIUM_BIN_DIR=target/debug contrib/bench/etcd-api-vs-etcd.sh   # no build
#
# Needs curl, python3, cargo and etcd 3.4 (Debian: apt-get install curl
# python3 etcd-server; etcdctl comes with etcd-client). Builds as
# compare-etcd.sh does (our crate at -O3 without debug assertions; set
# FERRIUM_BIN_DIR to use ferrium-server and ferrium-bench from there
# instead), and copies the binaries into the scratch directory (WORKDIR,
# default a new one under $TMPDIR or /tmp). Loopback ports 18301-18303,
# 19301-19303 (Ferrium) and 23479-23500 (etcd); processes are stopped and
# data deleted on exit, logs and the raw ferrium-bench output are kept and
# their path printed. KEEP=1 keeps the data directories too.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
READ_KEYS=${READ_KEYS:-10000}
OWN_API=${OWN_API:-1}
VALUE_SIZE=100
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/ferrium-etcd-api.XXXXXX")}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}

for tool in curl python3 "$ETCD" "$ETCDCTL"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
ETCD_VERSION=$("$ETCD" --version | awk '/^etcd Version/ { print $3 }')
case $ETCD_VERSION in
    3.4.*) ;;
    *) echo "warning: etcd $ETCD_VERSION, not 3.4" >&2 ;;
esac

mkdir -p "$WORKDIR/bin"
if [ -n "${FERRIUM_BIN_DIR:-}" ]; then
    BUILT="ferrium-server and ferrium-bench from $FERRIUM_BIN_DIR"
else
    command -v cargo >/dev/null || { echo "missing: cargo" >&2; exit 1; }
    # The build of compare-etcd.sh: our crate at full optimisation, with
    # debug info, dependencies from the shared dev build, debug assertions
    # off in openraft, validit and our crate (DEBUG_ASSERTIONS=1 keeps them).
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferrium/target}
    assertions=()
    if [ "${DEBUG_ASSERTIONS:-0}" != 1 ]; then
        for pkg in openraft validit ferrium; do
            assertions+=(--config "profile.dev.package.$pkg.debug-assertions=false")
        done
        assertions+=(--config "profile.dev.package.ferrium.overflow-checks=false")
    fi
    CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_DEV_DEBUG=1 \
        cargo build --quiet "${assertions[@]}" --bin ferrium-server --bin ferrium-bench
    FERRIUM_BIN_DIR=$CARGO_TARGET_DIR/debug
    BUILT="the -O3 dev build (as compare-etcd.sh)"
fi
# Our own copies: a rebuild in the target directory meanwhile changes nothing.
cp "$FERRIUM_BIN_DIR/ferrium-server" "$FERRIUM_BIN_DIR/ferrium-bench" "$WORKDIR/bin/"
SERVER="$WORKDIR/bin/ferrium-server"
BENCH="$WORKDIR/bin/ferrium-bench"

LOGS="$WORKDIR/logs"
mkdir -p "$LOGS"
declare -A fpid epid
cleanup() {
    local pids=("${fpid[@]}" "${epid[@]}")
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORKDIR/ferrium" "$WORKDIR/etcd" "$WORKDIR/bin"
    echo "logs and raw ferrium-bench output: $LOGS" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Ferrium ----------------------------------------------------------------

for i in 1 2 3; do
    cat > "$WORKDIR/ferrium-node$i.toml" <<CONF
[node]
id = $i
http_addr = "127.0.0.1:1830$i"
grpc_addr = "127.0.0.1:1930$i"
data_dir = "$WORKDIR/ferrium/node$i"

[cluster]
name = "bench"
initial_members = [
  { id = 1, http_addr = "127.0.0.1:18301", grpc_addr = "127.0.0.1:19301" },
  { id = 2, http_addr = "127.0.0.1:18302", grpc_addr = "127.0.0.1:19302" },
  { id = 3, http_addr = "127.0.0.1:18303", grpc_addr = "127.0.0.1:19303" },
]
CONF
done
for i in 1 2 3; do
    "$SERVER" --config "$WORKDIR/ferrium-node$i.toml" >>"$LOGS/ferrium-node$i.log" 2>&1 &
    fpid[$i]=$!
done

# --- etcd -------------------------------------------------------------------

ETCD_CLUSTER="e1=http://127.0.0.1:23480,e2=http://127.0.0.1:23490,e3=http://127.0.0.1:23500"
etcd_client_port() { echo $((23469 + 10 * $1)); }
for i in 1 2 3; do
    c=$(etcd_client_port "$i")
    p=$((c + 1))
    "$ETCD" --name "e$i" --data-dir "$WORKDIR/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
        --initial-cluster-token bench >>"$LOGS/etcd-e$i.log" 2>&1 &
    epid[$i]=$!
done

# --- helpers ----------------------------------------------------------------

wait_until() { # seconds command...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; exit 1; }
        sleep 0.05
    done
}

ferrium_up() { curl -sf -m 2 http://127.0.0.1:18301/leader 2>/dev/null | grep -q grpc_addr; }
etcd_up() {
    curl -sf -m 2 -X POST http://127.0.0.1:23479/v3/kv/range -d '{"key":"AA=="}' >/dev/null 2>&1
}

ferrium_leader() { # prints host:port of the leader's gRPC API
    local i addr
    # Just after an election the answer may name the leader without its
    # addresses yet.
    for i in $(seq 100); do
        addr=$(curl -sf -m 2 http://127.0.0.1:18301/leader |
            python3 -c 'import json,sys; print(json.load(sys.stdin).get("grpc_addr") or "")' 2>/dev/null) || true
        [ -z "$addr" ] || { echo "$addr"; return; }
        sleep 0.1
    done
    echo "no Ferrium leader with a gRPC address" >&2
    exit 1
}

etcd_leader() { # prints host:port of the leader's client URL
    local i c
    for i in 1 2 3; do
        c=$(etcd_client_port "$i")
        if curl -sf -X POST "http://127.0.0.1:$c/v3/maintenance/status" -d '{}' |
            python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["header"]["member_id"]==s["leader"] else 1)'; then
            echo "127.0.0.1:$c"
            return
        fi
    done
    echo "no etcd leader" >&2
    exit 1
}

# Succeeds when etcd's own client reads key $2 through endpoint $1 (a check
# that the bench wrote what it should, through each system's etcd API).
has_key() {
    ETCDCTL_API=3 "$ETCDCTL" --endpoints "$1" --command-timeout=5s get "$2" --print-value-only |
        grep -q .
}

ticks() { # CPU ticks (user + system) of the given processes, summed
    local pid t=0
    for pid in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
    echo "$t"
}

clients() { # N -> ferrium-bench arguments for N clients
    if [ "$1" -le 16 ]; then
        echo "-c $1"
    else
        echo "-c 16 --concurrency $(($1 / 16))"
    fi
}

# Runs ferrium-bench against one system after a warm-up run of the same
# command and prints its JSON report with the servers' and the client's CPU
# seconds added; the report ($LOGS/NAME.json) and the command
# ($LOGS/commands.txt) are kept.
run_bench() { # name system endpoint bench-args...
    local name=$1 sys=$2 ep=$3 c0 c1 pids
    shift 3
    if [ "$sys" = ferrium ]; then pids=("${fpid[@]}"); else pids=("${epid[@]}"); fi
    local cmd=("$BENCH" --protocol grpc --endpoints "$ep" --value-size "$VALUE_SIZE" "$@")
    if [ "$WARMUP" != 0 ] && [ "${*: -1}" != watch ]; then
        # Another seed: other keys for cas, whose first write expects none.
        "${cmd[@]}" -d "$WARMUP" --seed 2 >/dev/null 2>>"$LOGS/bench-stderr.txt"
    fi
    c0=$(ticks "${pids[@]}")
    /usr/bin/time -f '%U %S' -o "$LOGS/$name.time" "${cmd[@]}" --json -d "$DURATION" \
        >"$LOGS/$name.json" 2>>"$LOGS/bench-stderr.txt" ||
        { echo "ferrium-bench failed: ${cmd[*]}" >&2; tail -5 "$LOGS/bench-stderr.txt" >&2; exit 1; }
    c1=$(ticks "${pids[@]}")
    printf '%s --json -d %s\n' "${cmd[*]}" "$DURATION" >>"$LOGS/commands.txt"
    python3 - "$LOGS/$name.json" "$LOGS/$name.time" "$(((c1 - c0)))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
user, system = open(sys.argv[2]).read().split()[-2:]
r["server_cpu_s"] = int(sys.argv[3]) / int(sys.argv[4])
r["client_cpu_s"] = float(user) + float(system)
json.dump(r, open(sys.argv[1], "w"), indent=2)
print(json.dumps(r))
PY
}

# Fields of a report: "req/s p50 p99 errors server-us/req client-us/req".
fields() {
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
l = r.get("latency") or {}
n = max(r["requests"], 1)
print("%.0f %.2f %.2f %d %.0f %.0f" % (r["requests_per_s"], l.get("p50_ms", 0), l.get("p99_ms", 0),
      r["errors"], r["server_cpu_s"] * 1e6 / n, r["client_cpu_s"] * 1e6 / n))' "$1"
}

rows=()
own_rows=()
add() { # array label ferrium etcd ratio: one line of a table
    local -n to=$1
    shift
    to+=("$(printf '%-46s %12s %12s %8s' "$@")")
}
row() { add rows "$@"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

pair() { # array label fields-a fields-b: the rows of two reports side by side
    local to=$1 label=$2 a b
    read -r -a a <<<"$3"
    read -r -a b <<<"$4"
    add "$to" "$label (req/s)" "${a[0]}" "${b[0]}" "$(ratio "${a[0]}" "${b[0]}")"
    add "$to" "  p50 latency (ms)" "${a[1]}" "${b[1]}" "$(ratio "${a[1]}" "${b[1]}")"
    add "$to" "  p99 latency (ms)" "${a[2]}" "${b[2]}" "$(ratio "${a[2]}" "${b[2]}")"
    add "$to" "  servers' CPU per request (us)" "${a[4]}" "${b[4]}" "$(ratio "${a[4]}" "${b[4]}")"
    add "$to" "  client CPU per request (us)" "${a[5]}" "${b[5]}" "$(ratio "${a[5]}" "${b[5]}")"
    if [ "${a[3]}" != 0 ] || [ "${b[3]}" != 0 ]; then
        add "$to" "  errors" "${a[3]}" "${b[3]}" ""
    fi
}

compare() { # label clients bench-args...; leaves Ferrium's fields in $ferrium
    local label=$1 n=$2 name=${1// /-} etcd
    shift 2
    echo "measuring: $label, c=$n" >&2
    # shellcheck disable=SC2046 # clients prints separate words
    ferrium=$(fields "$(run_bench "ferrium-$name-$n" ferrium "$FL" --api etcd $(clients "$n") "$@")")
    # shellcheck disable=SC2046
    etcd=$(fields "$(run_bench "etcd-$name-$n" etcd "$EL" --api etcd $(clients "$n") "$@")")
    pair rows "$label, c=$n" "$ferrium" "$etcd"
}

watch_fields() { # report -> "received expected p50 p99 setup writes/s"
    python3 -c '
import json, sys
r = json.loads(sys.argv[1])
l = r.get("delivery_latency") or {}
print("%d %d %.2f %.2f %.2f %.0f" % (r["events_received"], r["events_expected"], l.get("p50_ms", 0),
      l.get("p99_ms", 0), r["setup_s"], r["writes_per_s"]))' "$1"
}

print_table() {
    printf '%-46s %12s %12s %8s\n' "" ferrium etcd ratio
    printf '%s\n' "${rows[@]}"
}

echo "workdir: $WORKDIR; $(nproc) CPUs; $BUILT; $DURATION s per row after a $WARMUP s warm-up" >&2
wait_until 60 ferrium_up
wait_until 60 etcd_up
FL=$(ferrium_leader)
EL=$(etcd_leader)
echo "ferrium leader $FL (gRPC), etcd leader $EL" >&2

# Keys for the reads: r-0000000000 .. r-$((READ_KEYS-1)), through the etcd
# API of each (Txns of 100 puts).
for target in "ferrium $FL" "etcd $EL"; do
    read -r sys ep <<<"$target"
    "$BENCH" --protocol grpc --api etcd --endpoints "$ep" -c 4 --key-prefix r- --key-size 12 \
        --value-size "$VALUE_SIZE" --batch-size 100 -n $(((READ_KEYS + 99) / 100)) batch \
        >"$LOGS/$sys-read-keys.txt"
    has_key "$ep" r-0000000042 || { echo "$sys: the read keys are missing" >&2; exit 1; }
done

own_rows=()
for n in 1 16 64 256; do
    compare put "$n" --key-prefix "p$n-" put
    [ "$OWN_API" = 1 ] || continue
    echo "measuring: Ferrium's own Set, c=$n" >&2
    # shellcheck disable=SC2046 # clients prints separate words
    own=$(fields "$(run_bench "ferrium-own-put-$n" ferrium "$FL" --api ferrium $(clients "$n") --key-prefix "s$n-" put)")
    pair own_rows "put, c=$n" "$own" "$ferrium"
done
for target in "ferrium $FL" "etcd $EL"; do
    read -r sys ep <<<"$target"
    has_key "$ep" p1-0000000000000 || { echo "$sys: the put check failed" >&2; exit 1; }
done
reads=(--key-prefix r- --key-size 12 --key-space "$READ_KEYS" --key-dist uniform)
compare "range linearizable" 64 "${reads[@]}" --consistency linearizable get
compare "range serializable" 64 "${reads[@]}" --consistency stale get
compare "txn cas" 64 cas

echo "measuring: watch fan-out" >&2
watch=(--key-space 1000 --key-prefix k- --watchers 10000 --streams 200 --rate 1000 -c 16 watch)
ferrium=$(watch_fields "$(run_bench ferrium-watch ferrium "$FL" --api etcd "${watch[@]}")")
etcd=$(watch_fields "$(run_bench etcd-watch etcd "$EL" --api etcd "${watch[@]}")")
read -r -a f <<<"$ferrium"
read -r -a e <<<"$etcd"
row "watch, 10000 watchers: events received" "${f[0]}" "${e[0]}" "$(ratio "${f[0]}" "${e[0]}")"
row "  events expected" "${f[1]}" "${e[1]}" ""
row "  writes/s (1000 asked)" "${f[5]}" "${e[5]}" ""
row "  delivery p50 (ms)" "${f[2]}" "${e[2]}" "$(ratio "${f[2]}" "${e[2]}")"
row "  delivery p99 (ms)" "${f[3]}" "${e[3]}" "$(ratio "${f[3]}" "${e[3]}")"
row "  time to create the watches (s)" "${f[4]}" "${e[4]}" "$(ratio "${f[4]}" "${e[4]}")"

[ "$(ferrium_leader)" = "$FL" ] || echo "warning: the Ferrium leader changed during the run" >&2
[ "$(etcd_leader)" = "$EL" ] || echo "warning: the etcd leader changed during the run" >&2

echo
echo "etcd's v3 gRPC API: Ferrium vs etcd $ETCD_VERSION, 3 nodes each on loopback, fsync on, $VALUE_SIZE-byte values"
echo "ferrium-bench --protocol grpc --api etcd against each leader, ${DURATION} s per row;"
echo "c = clients (connections x requests in flight on each); ratio = ferrium / etcd"
print_table

[ "$OWN_API" = 1 ] || exit 0
echo
echo "Ferrium: its own gRPC API (KvService.Set) against its etcd API (KV.Put, the put rows above)"
printf '%-46s %12s %12s %8s\n' "" "own Set" "etcd Put" ratio
printf '%s\n' "${own_rows[@]}"
