#!/usr/bin/env bash
# Compares a three-node Ferrium cluster with a three-node etcd 3.4 cluster on
# loopback, both with their default settings (fsync on), driven by the same
# client (wrk with Lua scripts on the JSON endpoints: Ferrium POST /write and
# /read, etcd POST /v3/kv/put and /v3/kv/range), 100-byte values. Prints one
# table with both systems and the ratio (ferrium / etcd for throughput), then
# loads 1,000,000 keys of 100 bytes into both and prints resident memory, data
# directory size and restart-to-serving time.
#
#   contrib/bench/compare-etcd.sh                    # 10 s per measurement
#   DURATION=30s contrib/bench/compare-etcd.sh
#   SKIP_LOAD=1 contrib/bench/compare-etcd.sh        # throughput table only
#   LOAD_KEYS=100000 contrib/bench/compare-etcd.sh   # smaller data set
#   FERRIUM_BIN_DIR=$CARGO_TARGET_DIR/release contrib/bench/compare-etcd.sh
#                                                    # given binaries, no build
#
# Needs wrk, curl, python3 and etcd 3.4 (Debian: apt-get install wrk curl
# python3 etcd-server). Everything runs from a scratch directory (WORKDIR,
# default a new one under $TMPDIR or /tmp) on loopback ports 18001-18003,
# 19001-19003 (Ferrium) and 22379-22399 (etcd); processes are stopped and data
# deleted on exit, logs and raw wrk output are kept and their path printed.
# KEEP=1 keeps the data directories too.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
WRK_THREADS=${WRK_THREADS:-2}
READ_KEYS=${READ_KEYS:-10000}
LOAD_KEYS=${LOAD_KEYS:-1000000}
VALUE_SIZE=100
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/ferrium-vs-etcd.XXXXXX")}
ETCD=${ETCD:-etcd}

for tool in wrk curl python3 cargo "$ETCD"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
ETCD_VERSION=$("$ETCD" --version | awk '/^etcd Version/ { print $3 }')
case $ETCD_VERSION in
    3.4.*) ;;
    *) echo "warning: etcd $ETCD_VERSION, not 3.4" >&2 ;;
esac

if [ -n "${FERRIUM_BIN_DIR:-}" ]; then
    # Given binaries (e.g. the release build the packages ship).
    mkdir -p "$WORKDIR/bin"
    cp "$FERRIUM_BIN_DIR/ferrium-server" "$FERRIUM_BIN_DIR/ferrium-bench" "$WORKDIR/bin/"
    SERVER="$WORKDIR/bin/ferrium-server"
    BENCH="$WORKDIR/bin/ferrium-bench"
else
# Our crate at full optimisation, dependencies from the shared dev build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferrium/target}
# Debug info does not slow the code down and lets perf name functions. Debug
# assertions are turned off in openraft (and validit, whose state validation
# runs on every access under debug assertions), and in our crate, as in a
# release build: they cost about 40% of linearizable read throughput in one
# measurement.
# DEBUG_ASSERTIONS=1 keeps them (the plain dev build).
assertions=()
if [ "${DEBUG_ASSERTIONS:-0}" != 1 ]; then
    for pkg in openraft validit ferrium; do
        assertions+=(--config "profile.dev.package.$pkg.debug-assertions=false")
    done
    assertions+=(--config "profile.dev.package.ferrium.overflow-checks=false")
fi
CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_DEV_DEBUG=1 \
    cargo build --quiet "${assertions[@]}" --bin ferrium-server --bin ferrium-bench
SERVER="$CARGO_TARGET_DIR/debug/ferrium-server"
BENCH="$CARGO_TARGET_DIR/debug/ferrium-bench"
fi

LOGS="$WORKDIR/logs"
mkdir -p "$LOGS" "$WORKDIR/lua"
declare -A fpid epid
cleanup() {
    local pids=("${fpid[@]}" "${epid[@]}")
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORKDIR/ferrium" "$WORKDIR/etcd"
    echo "logs and raw wrk output: $LOGS" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Ferrium ----------------------------------------------------------------

for i in 1 2 3; do
    cat > "$WORKDIR/ferrium-node$i.toml" <<CONF
[node]
id = $i
http_addr = "127.0.0.1:1800$i"
grpc_addr = "127.0.0.1:1900$i"
data_dir = "$WORKDIR/ferrium/node$i"

[cluster]
name = "bench"
initial_members = [
  { id = 1, http_addr = "127.0.0.1:18001", grpc_addr = "127.0.0.1:19001" },
  { id = 2, http_addr = "127.0.0.1:18002", grpc_addr = "127.0.0.1:19002" },
  { id = 3, http_addr = "127.0.0.1:18003", grpc_addr = "127.0.0.1:19003" },
]
CONF
done

start_ferrium() {
    for i in 1 2 3; do
        "$SERVER" --config "$WORKDIR/ferrium-node$i.toml" >>"$LOGS/ferrium-node$i.log" 2>&1 &
        fpid[$i]=$!
    done
}

# --- etcd -------------------------------------------------------------------

ETCD_CLUSTER="e1=http://127.0.0.1:22380,e2=http://127.0.0.1:22390,e3=http://127.0.0.1:22400"
etcd_client_port() { echo $((22369 + 10 * $1)); }

start_etcd() {
    local state=$1 i c p
    for i in 1 2 3; do
        c=$(etcd_client_port "$i")
        p=$((c + 1))
        "$ETCD" --name "e$i" --data-dir "$WORKDIR/etcd/e$i" \
            --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state "$state" \
            --initial-cluster-token bench >>"$LOGS/etcd-e$i.log" 2>&1 &
        epid[$i]=$!
    done
}

stop_all() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# --- helpers ----------------------------------------------------------------

b64() { printf '%s' "$1" | base64 -w0; }

# Succeeds when a linearizable read of key $2 through the system's endpoint
# returns the key.
ferrium_serves() {
    curl -sf -m 2 -X POST "http://127.0.0.1:18001/read" \
        -d "{\"key\":\"$1\",\"consistency\":\"linearizable\"}" 2>/dev/null | grep -q '"value":"'
}
etcd_serves() {
    curl -sf -m 2 -X POST "http://127.0.0.1:22379/v3/kv/range" \
        -d "{\"key\":\"$(b64 "$1")\"}" 2>/dev/null | grep -q '"kvs"'
}
ferrium_up() { curl -sf -m 2 http://127.0.0.1:18001/leader 2>/dev/null | grep -q api_addr; }
etcd_up() {
    curl -sf -m 2 -X POST http://127.0.0.1:22379/v3/kv/range -d '{"key":"AA=="}' >/dev/null 2>&1
}

wait_until() { # seconds command...
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; exit 1; }
        sleep 0.05
    done
}

ferrium_leader() { # prints host:port of the leader's HTTP API
    curl -sf http://127.0.0.1:18001/leader | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_addr"])'
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

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# --- wrk scripts --------------------------------------------------------------

# Shared by all scripts: per-thread ids, base64, a fixed 100-byte value. Read
# bodies are built once per thread in init() for both systems, so the client
# does the same little work per request whatever it talks to.
cat > "$WORKDIR/lua/common.lua" <<'LUA'
local bit = require("bit")
local tid = 0
function setup(thread)
    tid = tid + 1
    thread:set("id", tid)
end
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local sym = {}
for i = 1, 64 do sym[i - 1] = alphabet:sub(i, i) end
function b64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
        out[#out + 1] = sym[bit.rshift(n, 18)] .. sym[bit.band(bit.rshift(n, 12), 63)]
            .. (b and sym[bit.band(bit.rshift(n, 6), 63)] or "=")
            .. (c and sym[bit.band(n, 63)] or "=")
    end
    return table.concat(out)
end
value = string.rep("v", 100)
value64 = b64(value)
counter = 0
prefix = "w"
read_keys = 10000
bodies = {}
-- read_body(key) -> request body; set by the read scripts.
read_body = nil
function init(args)
    prefix = (args[1] or "w") .. "-" .. id .. "-"
    read_keys = tonumber(args[2] or "10000")
    math.randomseed(id * 7919)
    if read_body then
        for i = 0, read_keys - 1 do
            bodies[i + 1] = read_body(string.format("r-%010d", i))
        end
    end
end
function next_read()
    return bodies[math.random(1, read_keys)]
end
LUA

lua() { # name body
    { cat "$WORKDIR/lua/common.lua"; echo "$2"; } > "$WORKDIR/lua/$1.lua"
}
lua ferrium-put 'wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
    counter = counter + 1
    return wrk.format(nil, "/write", nil,
        "{\"Set\":{\"key\":\"" .. prefix .. counter .. "\",\"value\":\"" .. value .. "\"}}")
end'
lua etcd-put 'wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
    counter = counter + 1
    return wrk.format(nil, "/v3/kv/put", nil,
        "{\"key\":\"" .. b64(prefix .. counter) .. "\",\"value\":\"" .. value64 .. "\"}")
end'
for c in linearizable stale; do
    lua "ferrium-read-$c" "wrk.method = \"POST\"
wrk.headers[\"Content-Type\"] = \"application/json\"
read_body = function(k) return '{\"key\":\"' .. k .. '\",\"consistency\":\"$c\"}' end
function request() return wrk.format(nil, \"/read\", nil, next_read()) end"
done
lua etcd-read-linearizable 'wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
read_body = function(k) return "{\"key\":\"" .. b64(k) .. "\"}" end
function request() return wrk.format(nil, "/v3/kv/range", nil, next_read()) end'
lua etcd-read-serializable 'wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
read_body = function(k) return "{\"key\":\"" .. b64(k) .. "\",\"serializable\":true}" end
function request() return wrk.format(nil, "/v3/kv/range", nil, next_read()) end'

# Loads keys into etcd with concurrent txns of 128 puts (etcd's default
# --max-txn-ops) through the JSON gateway: one Raft entry per txn, as one
# BatchSet is one entry in Ferrium.
cat > "$WORKDIR/etcd-load.py" <<'PY'
import base64, http.client, json, sys, threading
host, port = sys.argv[1].split(":")
prefix, width, count, vsize = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
batch, conns = 128, 16
value = base64.b64encode(b"v" * vsize).decode()
batches = [(s, min(s + batch, count)) for s in range(0, count, batch)]
lock, failed = threading.Lock(), []
def run():
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            if not batches:
                return
            lo, hi = batches.pop()
        ops = [{"requestPut": {"key": base64.b64encode(("%s%0*d" % (prefix, width, n)).encode()).decode(),
                               "value": value}} for n in range(lo, hi)]
        c.request("POST", "/v3/kv/txn", json.dumps({"success": ops}), {"Content-Type": "application/json"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            failed.append(body[:200])
            return
threads = [threading.Thread(target=run) for _ in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit("etcd load failed: %r" % failed[0])
PY

# --- measurements ---------------------------------------------------------------

# Runs wrk and prints "req/s p50_ms p99_ms errors"; the raw output goes to $LOGS.
run_wrk() { # name conns url script
    local name=$1 conns=$2 url=$3 script=$4 threads out
    threads=$((conns < WRK_THREADS ? conns : WRK_THREADS))
    wrk -t"$threads" -c"$conns" -d"$WARMUP" -s "$WORKDIR/lua/$script.lua" "$url" -- "warm-$name" "$READ_KEYS" >/dev/null
    out=$(wrk -t"$threads" -c"$conns" -d"$DURATION" --latency -s "$WORKDIR/lua/$script.lua" "$url" -- "$name" "$READ_KEYS")
    printf '== %s\n%s\n\n' "$name" "$out" >>"$LOGS/wrk.txt"
    awk '
        function ms(v) {
            if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v
        }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx/ { err += $NF }
        /Socket errors/ { for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) err += $i }
        END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, err }' <<<"$out"
}

rows=()
row() { rows+=("$(printf '%-44s %12s %12s %8s' "$@")"); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }

compare() { # label conns ferrium-url ferrium-script etcd-url etcd-script
    local label=$1 conns=$2 f e
    echo "measuring: $label, $conns connections" >&2
    read -r -a f <<<"$(run_wrk "ferrium-$4-c$conns" "$conns" "$3" "$4")"
    read -r -a e <<<"$(run_wrk "etcd-$6-c$conns" "$conns" "$5" "$6")"
    row "$label, c=$conns (req/s)" "${f[0]}" "${e[0]}" "$(ratio "${f[0]}" "${e[0]}")"
    row "  p50 latency (ms)" "${f[1]}" "${e[1]}" "$(ratio "${f[1]}" "${e[1]}")"
    row "  p99 latency (ms)" "${f[2]}" "${e[2]}" "$(ratio "${f[2]}" "${e[2]}")"
    if [ "${f[3]}" != 0 ] || [ "${e[3]}" != 0 ]; then
        row "  errors (non-2xx/socket)" "${f[3]}" "${e[3]}" ""
    fi
}

print_table() {
    printf '%-44s %12s %12s %8s\n' "" ferrium etcd ratio
    printf '%s\n' "${rows[@]}"
}

echo "workdir: $WORKDIR; $(nproc) CPUs; wrk -t$WRK_THREADS -d$DURATION (after $WARMUP warm-up)" >&2
start_ferrium
start_etcd new
wait_until 60 ferrium_up
wait_until 60 etcd_up
FL=$(ferrium_leader)
EL=$(etcd_leader)
echo "ferrium leader $FL, etcd leader $EL" >&2

# Keys for the read tests: r-0000000000 .. r-$((READ_KEYS-1)), 100-byte values.
"$BENCH" --leader --endpoints "$FL" -c 4 --key-prefix r- --key-size 12 --batch-size 500 \
    -n $(((READ_KEYS + 499) / 500)) batch >"$LOGS/ferrium-read-keys.txt"
python3 "$WORKDIR/etcd-load.py" "$EL" r- 10 "$READ_KEYS" "$VALUE_SIZE"

for c in 1 16 64 256; do
    compare "writes" "$c" "http://$FL" ferrium-put "http://$EL" etcd-put
done
# The wrk scripts wrote what they should: keys "<name>-<thread>-<n>" (wrk
# may build a request before the run starts, so n need not start at 1).
written() { "$1" "$2-1-1" || "$1" "$2-1-2" || "$1" "$2-1-3"; }
written ferrium_serves ferrium-ferrium-put-c1 || { echo "ferrium write check failed" >&2; exit 1; }
written etcd_serves etcd-etcd-put-c1 || { echo "etcd write check failed" >&2; exit 1; }
etcd_serves r-0000000042 || { echo "etcd read keys missing" >&2; exit 1; }
ferrium_serves r-0000000042 || { echo "ferrium read keys missing" >&2; exit 1; }
compare "linearizable reads" 64 "http://$FL" ferrium-read-linearizable "http://$EL" etcd-read-linearizable
compare "stale / serializable reads" 64 "http://$FL" ferrium-read-stale "http://$EL" etcd-read-serializable

echo
echo "Ferrium vs etcd $ETCD_VERSION, 3 nodes each on loopback, fsync on, $VALUE_SIZE-byte values"
echo "wrk -t$WRK_THREADS -d$DURATION per row; ratio = ferrium / etcd (throughput: higher is better for ferrium; latency: lower is)"
print_table

[ "${SKIP_LOAD:-0}" = 1 ] && exit 0

# --- 1,000,000 keys: memory, disk, restart ------------------------------------

echo >&2
echo "loading $LOAD_KEYS keys of $VALUE_SIZE bytes into each" >&2
t0=$(date +%s.%N)
"$BENCH" --leader --endpoints "$FL" -c 8 --key-prefix m- --key-size 16 --batch-size 1000 \
    -n $(((LOAD_KEYS + 999) / 1000)) batch >"$LOGS/ferrium-load.txt"
fload=$(since "$t0")
t0=$(date +%s.%N)
python3 "$WORKDIR/etcd-load.py" "$EL" m- 14 "$LOAD_KEYS" "$VALUE_SIZE"
eload=$(since "$t0")
last_key=$(printf 'm-%014d' $((LOAD_KEYS - 1)))
wait_until 60 ferrium_serves "$last_key"
wait_until 60 etcd_serves "$last_key"
sleep 5 # let followers apply and background flushes settle

measure() { # label system pids... -> "rss_mib disk_mib" (sums) and a per-node line
    local sys=$1 dirs=$2 rss=0 r i=1 node=()
    shift 2
    for pid in "$@"; do
        r=$(rss_kib "$pid")
        rss=$((rss + r))
        node+=("$((r / 1024))")
        i=$((i + 1))
    done
    local disk
    disk=$(du -sk "$dirs" | awk '{ print $1 }')
    echo "$((rss / 1024)) $((disk / 1024)) ${node[*]}"
}

read -r f_rss f_disk f_n1 f_n2 f_n3 <<<"$(measure ferrium "$WORKDIR/ferrium" "${fpid[@]}")"
read -r e_rss e_disk e_n1 e_n2 e_n3 <<<"$(measure etcd "$WORKDIR/etcd" "${epid[@]}")"

# Restart: stop all three nodes (SIGTERM), start them again and time until a
# linearizable read of the last loaded key succeeds on node 1.
stop_all "${fpid[@]}"
t0=$(date +%s.%N)
start_ferrium
wait_until 300 ferrium_serves "$last_key"
f_restart=$(since "$t0")
stop_all "${epid[@]}"
t0=$(date +%s.%N)
start_etcd existing
wait_until 300 etcd_serves "$last_key"
e_restart=$(since "$t0")
sleep 2
read -r f_rss2 _ <<<"$(measure ferrium "$WORKDIR/ferrium" "${fpid[@]}")"
read -r e_rss2 _ <<<"$(measure etcd "$WORKDIR/etcd" "${epid[@]}")"

row "$LOAD_KEYS keys: load time (s)" "$fload" "$eload" "$(ratio "$fload" "$eload")"
row "  RSS, sum of 3 nodes (MiB)" "$f_rss" "$e_rss" "$(ratio "$f_rss" "$e_rss")"
row "  RSS per node (MiB)" "$f_n1/$f_n2/$f_n3" "$e_n1/$e_n2/$e_n3" ""
row "  data dirs, sum of 3 nodes (MiB)" "$f_disk" "$e_disk" "$(ratio "$f_disk" "$e_disk")"
row "  restart to serving (s)" "$f_restart" "$e_restart" "$(ratio "$f_restart" "$e_restart")"
row "  RSS after restart, sum (MiB)" "$f_rss2" "$e_rss2" "$(ratio "$f_rss2" "$e_rss2")"
echo
echo "Ferrium loaded with ferrium-bench batch (BatchSet of 1000 keys, 8 connections);"
echo "etcd with JSON-gateway txns of 128 puts (its --max-txn-ops), 16 connections."
print_table
