#!/usr/bin/env bash
# Backup and restore, Ferrium against etcd 3.4, one node of each on this
# machine, for each N in $N (default "1000000 10000000"): N keys key/%010d
# with 100-byte values.
#
# For each N, a fresh Ferrium node (ferrium-server, a temporary config like
# etc/examples/single-node.toml) and a fresh etcd (--quota-backend-bytes
# $QUOTA_BYTES, default 16 GiB: the default 2 GiB may not hold 10M keys, and
# etcd warns above 8 GiB), data directories side by side in one work
# directory (one file system), both fsyncing as they ship: Ferrium's
# storage.sync_writes = true (the default, written out in the config; the
# Raft log lives in the same RocksDB, so [raft] has no key of its own for
# it), etcd its WAL on every Raft Ready. Then:
#
#   1. load: the same client for both, the etcd_load example
#      (contrib/bench/etcd_load.rs): Txns of $TXN_OPS puts (default 128:
#      Ferrium's limit, MAX_TXN_OPS in src/node.rs, fixed and not a
#      configuration key; etcd gets --max-txn-ops $TXN_OPS) through etcd's
#      v3 gRPC API, $IN_FLIGHT in flight (default 4, one connection each),
#      to Ferrium's gRPC port and to etcd's client port; keys/s. Both then
#      count their keys (PASS/FAIL).
#   2. backup, after $SETTLE s (default 5): `ferriumctl --endpoints HTTP
#      snapshot save F` and `etcdctl snapshot save F`, each under
#      `/usr/bin/time -f '%e %M'` (wall time, the tool's peak RSS), while the
#      server's VmRSS and RssAnon are sampled every 100 ms (growth = highest
#      sample - the value just before); the file sizes. Ferrium builds a
#      fresh snapshot of everything applied for the backup: that is part of
#      its time (the server waits up to 10 minutes for it).
#      network.request_timeout is $REQUEST_TIMEOUT (default 30s, Ferrium's).
#   3. both servers stopped; restore, each under /usr/bin/time:
#      `ferriumctl snapshot restore F --data-dir D --id 1 --initial-members
#      1=HTTP/GRPC` and `etcdctl snapshot restore F --data-dir D2` (etcd 3.4
#      restores with etcdctl; there is no etcdutl).
#   4. each restored directory started on its own; the key count checked
#      (Ferrium: etcd's JSON gateway POST /v3/kv/range with count_only; etcd:
#      etcdctl get --prefix --limit 1 -w json, whose count is the whole
#      range's: etcdctl 3.4 has no --count-only), PASS/FAIL, and the time
#      from the start until that count is answered.
#
# A table after each N and all of them at the end, with the machine. If a
# step of etcd fails (quota, OOM, a crash), what it said is printed and the
# rest of etcd's steps for that N are skipped; Ferrium goes on.
#
#   contrib/bench/backup-vs-etcd.sh                     # N="1000000 10000000"
#   N="100000" contrib/bench/backup-vs-etcd.sh          # a quick check
#   PROFILE=release contrib/bench/backup-vs-etcd.sh     # an existing release build
#   KEEP=1 WORKDIR=/var/tmp/bve contrib/bench/backup-vs-etcd.sh   # keep data and backups
#
# Binaries: ferrium-server, ferriumctl and examples/etcd_load in
# $FERRIUM_BIN_DIR (default ${CARGO_TARGET_DIR:-target}/$PROFILE, PROFILE
# default debug). This script builds nothing; the dev profile build is
#   cargo build --bins --examples
# (Ferrium's crate at opt-level 1 with debug assertions, its dependencies,
# RocksDB among them, at opt-level 3; Cargo.toml [profile.dev]). Needs etcd
# and etcdctl 3.4 (Debian: etcd-server, etcd-client), /usr/bin/time, curl,
# python3. Ports: free loopback ports picked by the kernel just before each
# server starts. Work directory: $WORKDIR, default a new one under $TMPDIR
# or /tmp; data directories and backup files are deleted after each N
# unless KEEP=1 (at 10M keys they take several GB), logs are kept. Only the
# processes this script started are stopped, on exit too.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)

N=${N:-"1000000 10000000"}
PROFILE=${PROFILE:-debug}
FERRIUM_BIN_DIR=${FERRIUM_BIN_DIR:-${CARGO_TARGET_DIR:-target}/$PROFILE}
ETCD=${ETCD:-/usr/bin/etcd}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
# Not ETCD_*: etcd reads (and warns about) environment variables named so.
QUOTA_BYTES=${QUOTA_BYTES:-17179869184}
TXN_OPS=${TXN_OPS:-128}
IN_FLIGHT=${IN_FLIGHT:-4}
SETTLE=${SETTLE:-5}
START_TIMEOUT=${START_TIMEOUT:-1800}
# Ferrium answers a request within network.request_timeout (default 30s,
# kept here); a backup waits up to 10 minutes for its snapshot whatever this
# is.
REQUEST_TIMEOUT=${REQUEST_TIMEOUT:-30s}
VALUE_SIZE=100
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/backup-vs-etcd.XXXXXX")}
mkdir -p "$WORKDIR"

SERVER="$FERRIUM_BIN_DIR/ferrium-server"
CTL="$FERRIUM_BIN_DIR/ferriumctl"
LOADER="$FERRIUM_BIN_DIR/examples/etcd_load"
TIME=/usr/bin/time

for f in "$SERVER" "$CTL" "$LOADER"; do
    [ -x "$f" ] || {
        echo "missing: $f (cargo build --bins --examples, or set FERRIUM_BIN_DIR or PROFILE)" >&2
        exit 1
    }
done
for tool in "$ETCD" "$ETCDCTL" "$TIME" curl python3 du stat; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
if [ "$TXN_OPS" -gt 128 ]; then
    echo "TXN_OPS=$TXN_OPS: Ferrium takes at most 128 operations in one Txn (MAX_TXN_OPS in src/node.rs, not configurable), and both systems get the same requests" >&2
    exit 1
fi
ETCD_VERSION=$("$ETCD" --version | awk '/^etcd Version/ { print $3 }')
case $ETCD_VERSION in
    3.4.*) ;;
    *) echo "warning: etcd $ETCD_VERSION, not 3.4" >&2 ;;
esac
export ETCDCTL_API=3
case $PROFILE in
    debug) BUILD="dev profile (Ferrium's crate opt-level 1 with debug assertions, dependencies opt-level 3)" ;;
    release) BUILD="release profile (opt-level 3, thin LTO, no debug assertions)" ;;
    *) BUILD="profile $PROFILE" ;;
esac
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT with uncommitted changes"

pids=()
forget() { # pid: no longer ours to stop
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}
current=""
cleanup() {
    local pid
    for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]+"${pids[@]}"}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ] && [ -n "$current" ]; then
        rm -rf "$current/ferrium-data" "$current/ferrium-restored" "$current/etcd-data" \
            "$current/etcd-restored" "$current/ferrium.snap" "$current/etcd.db"
    fi
    echo "logs: $WORKDIR" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v k="$1" -v d="$2" 'BEGIN { printf "%.1f", k / d }'; } # value divisor
say() { echo "[$(date +%T)] $*" >&2; }
rss_kib() { # pid: "VmRSS RssAnon" in KiB, or fails once the process is gone
    local k v _ rss="" anon=""
    while read -r k v _; do
        case $k in
            VmRSS:) rss=$v ;;
            RssAnon:) anon=$v ;;
        esac
    done <"/proc/$1/status" || return 1
    [ -n "$rss" ] && [ -n "$anon" ] || return 1
    echo "$rss $anon"
} 2>/dev/null
sample_rss() { # pid out stopfile: the highest VmRSS and RssAnon (KiB) into out, every 100 ms
    local r a max_r=0 max_a=0
    while [ ! -e "$3" ]; do
        read -r r a < <(rss_kib "$1") || break
        if [ "$r" -gt "$max_r" ] || [ "$a" -gt "$max_a" ]; then
            [ "$r" -gt "$max_r" ] && max_r=$r
            [ "$a" -gt "$max_a" ] && max_a=$a
            echo "$max_r $max_a" >"$2"
        fi
        sleep 0.1
    done
}
stop() { # pid: SIGTERM and wait
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
alive() { # pid: running (an exited child not yet waited for is a zombie, Z)
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st:0:1}" != Z ]
}
# died NAME PID LOG: if PID (ours) has exited, says so on standard error
# with its exit status and the end of LOG, and succeeds.
died() {
    local rc=0
    ! alive "$2" || return 1
    wait "$2" 2>/dev/null || rc=$?
    forget "$2"
    if [ "$rc" -gt 128 ]; then
        rc="$rc (signal $((rc - 128))$([ "$rc" = 137 ] && echo ', SIGKILL: the OOM killer?'))"
    fi
    echo "$1: the server exited, status $rc; the end of $3:" >&2
    tail -20 "$3" >&2
}
# timed OUTFILE CMD...: runs CMD under /usr/bin/time; the wall time and peak
# RSS (KiB) go to OUTFILE.time, its output to OUTFILE; the status of CMD.
timed() {
    local out=$1
    shift
    "$TIME" -f '%e %M' -o "$out.time" "$@" >"$out" 2>&1
}

# Ferrium's config: ports, data dir, cluster name.
ferrium_conf() { # file http grpc data_dir name
    cat >"$1" <<CONF
# Like etc/examples/single-node.toml, on free ports.
[node]
id = 1
http_addr = "127.0.0.1:$2"
grpc_addr = "127.0.0.1:$3"
data_dir = "$4"

[network]
request_timeout = "$REQUEST_TIMEOUT"

[storage]
sync_writes = true

[logging]
level = "info"

[cluster]
name = "$5"
initial_members = [ { id = 1, http_addr = "127.0.0.1:$2", grpc_addr = "127.0.0.1:$3" } ]
CONF
}
ferrium_start() { # config log: sets fpid
    env -u FERRIUM_BIN_DIR "$SERVER" --config "$1" >>"$2" 2>&1 &
    fpid=$!
    pids+=("$fpid")
}
# Key count through etcd's JSON gateway on Ferrium's HTTP port.
ferrium_count() { # http_port
    curl -sf -m 900 -X POST "http://127.0.0.1:$1/v3/kv/range" -H 'Content-Type: application/json' \
        -d "{\"key\":\"$(printf key/ | base64)\",\"range_end\":\"$(printf key0 | base64)\",\"count_only\":true}" |
        python3 -c 'import json, sys; print(int(json.load(sys.stdin).get("count", 0)))'
}
etcd_start() { # data_dir client_port peer_port log: sets epid
    "$ETCD" --name default --data-dir "$1" \
        --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
        --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
        --initial-cluster "default=http://127.0.0.1:$3" \
        --quota-backend-bytes "$QUOTA_BYTES" --max-txn-ops "$TXN_OPS" >>"$4" 2>&1 &
    epid=$!
    pids+=("$epid")
}
etcd_count() { # client_port
    "$ETCDCTL" --endpoints "127.0.0.1:$1" --command-timeout=900s get key/ --prefix --limit 1 -w json |
        python3 -c 'import json, sys; print(int(json.load(sys.stdin).get("count", 0)))'
}
# wait_serving SECONDS PID LOG COUNTFN PORT: until COUNTFN PORT answers;
# prints the count. Fails if the process exits (the caller then reports it
# with died) or time runs out.
wait_serving() {
    local deadline=$((SECONDS + $1)) pid=$2 log=$3 fn=$4 port=$5 c
    while :; do
        alive "$pid" || return 1
        if c=$("$fn" "$port" 2>/dev/null); then
            echo "$c"
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "not serving after $1 s; see $log" >&2; return 1; }
        sleep 0.2
    done
}
# load SYS PORT PID LOG: runs the loader; sets load_rate; status 1 with what
# went wrong on standard error.
load() {
    local sys=$1 port=$2 pid=$3 log=$4 out="$dir/$1-load.out" rc
    say "$sys: loading $keys keys (Txns of $TXN_OPS puts, $IN_FLIGHT in flight)"
    {
        rc=0
        "$LOADER" --endpoint "http://127.0.0.1:$port" --keys "$keys" --txn-ops "$TXN_OPS" \
            --in-flight "$IN_FLIGHT" --value-size "$VALUE_SIZE" 2>&1 >"$out" || rc=$?
        echo "$rc" >"$out.rc"
    } | tee "$dir/$sys-load.err" >&2
    rc=$(cat "$out.rc")
    if [ "$rc" != 0 ]; then
        echo "$sys: the load failed (etcd_load exit status $rc):" >&2
        grep -v '^etcd_load: [0-9]* of ' "$dir/$sys-load.err" >&2 || true
        died "$sys" "$pid" "$log" || true
        return 1
    fi
    load_rate=$(tr ' ' '\n' <"$out" | sed -n 's/^keys_per_s=//p')
    say "$sys: $(cat "$out")"
}
# backup SYS PID LOG FILE CMD...: the backup under /usr/bin/time with the
# server's RSS sampled; sets backup_s backup_mib rss_growth anon_growth file_mib.
backup() {
    local sys=$1 pid=$2 log=$3 file=$4 out="$dir/$1-backup.out" stopfile="$dir/$1-rss.stop" rc=0 sp
    local rss0 anon0 rss1 anon1
    shift 4
    rm -f "$stopfile"
    read -r rss0 anon0 < <(rss_kib "$pid") || { died "$sys" "$pid" "$log" || true; return 1; }
    echo "$rss0 $anon0" >"$dir/$sys-rss.max"
    sample_rss "$pid" "$dir/$sys-rss.max" "$stopfile" &
    sp=$!
    pids+=("$sp")
    say "$sys: backup: $*"
    timed "$out" "$@" || rc=$?
    touch "$stopfile"
    wait "$sp" 2>/dev/null || true
    forget "$sp"
    if [ "$rc" != 0 ]; then
        echo "$sys: the backup failed (exit status $rc):" >&2
        cat "$out" >&2
        died "$sys" "$pid" "$log" || true
        return 1
    fi
    read -r rss1 anon1 <"$dir/$sys-rss.max"
    read -r backup_s backup_kib <"$out.time"
    backup_mib=$(mib "$backup_kib" 1024)
    rss_growth=$(mib $((rss1 - rss0)) 1024)
    anon_growth=$(mib $((anon1 - anon0)) 1024)
    file_bytes=$(stat -c %s "$file")
    file_mib=$(mib "$file_bytes" 1048576)
    say "$sys: backup ${backup_s}s, tool peak ${backup_mib} MiB; server VmRSS $(mib "$rss0" 1024) -> max $(mib "$rss1" 1024) MiB, RssAnon $(mib "$anon0" 1024) -> max $(mib "$anon1" 1024) MiB; file $file_bytes bytes"
}
# restore SYS CMD...: under /usr/bin/time; sets restore_s restore_mib.
restore() {
    local sys=$1 out="$dir/$1-restore.out" rc=0
    shift
    say "$sys: restore: $*"
    timed "$out" "$@" || rc=$?
    if [ "$rc" != 0 ]; then
        echo "$sys: the restore failed (exit status $rc):" >&2
        cat "$out" >&2
        return 1
    fi
    read -r restore_s restore_kib <"$out.time"
    restore_mib=$(mib "$restore_kib" 1024)
    say "$sys: restore ${restore_s}s, tool peak ${restore_mib} MiB"
}

checks=()
check() { # label expected actual
    local v=FAIL
    [ "$2" = "$3" ] && v=PASS
    checks+=("$(printf '%-4s %s: %s (expected %s)' "$v" "$1" "$3" "$2")")
    echo "$v $1: $3 (expected $2)" >&2
}

FMT='%-8s %9s %10s %9s %11s %11s %12s %9s %10s %12s %8s %s'
table_head() {
    # shellcheck disable=SC2059
    printf "$FMT\n" system keys "load key/s" "backup s" "backup MiB" "srv +RSS" "srv +anon" \
        "file MiB" "restore s" "restore MiB" "start s" "count"
}
rows=()
row() { # system keys load backup_s backup_mib growth anon file_mib restore_s restore_mib start count
    # shellcheck disable=SC2059
    rows+=("$(printf "$FMT" "$@")")
}
machine() {
    local cpu fs mem
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(df -T "$WORKDIR" | awk 'NR == 2 { print $2 " on " $1 }')
    fs="$fs ($(findmnt -no OPTIONS -T "$WORKDIR" 2>/dev/null || echo '?'))"
    echo "machine: $(nproc) CPUs ($cpu), $mem RAM, Linux $(uname -r); work dir $WORKDIR: $fs"
}
results() {
    echo
    echo "Backup and restore: Ferrium vs etcd $ETCD_VERSION, one node each, fsync on, keys key/%010d with $VALUE_SIZE-byte values"
    echo "Ferrium $COMMIT, $BUILD, from $FERRIUM_BIN_DIR;"
    echo "  storage.sync_writes = true (default), network.request_timeout = \"$REQUEST_TIMEOUT\" (default 30s)"
    echo "etcd $ETCD_VERSION: --quota-backend-bytes $QUOTA_BYTES ($(mib "$QUOTA_BYTES" 1073741824) GiB), --max-txn-ops $TXN_OPS, --snapshot-count default, fsync default"
    [ -n "${quota_warning:-}" ] && echo "  etcd said: $quota_warning"
    echo "load: etcd_load, Txns of $TXN_OPS puts through etcd's gRPC API, $IN_FLIGHT in flight, the same client for both"
    machine
    echo "backup: ferriumctl snapshot save / etcdctl snapshot save; restore: ferriumctl snapshot restore / etcdctl snapshot restore"
    echo "backup MiB, restore MiB: the tool's peak RSS (/usr/bin/time %M)"
    echo "srv +RSS, srv +anon (MiB): the server's highest VmRSS / RssAnon (sampled every 100 ms) during the backup less the value just before;"
    echo "  VmRSS counts the pages of files mapped into the process too (etcd maps its bbolt file), RssAnon only its own memory"
    echo "start s: from starting the restored directory until its key count is answered"
    table_head
    printf '%s\n' "${rows[@]}"
    printf '%s\n' "${checks[@]}"
    [ "${#notes[@]}" = 0 ] || printf 'note: %s\n' "${notes[@]}"
}
notes=()

say "work dir $WORKDIR; N = $N; $(machine)"
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

for keys in $N; do
    t_n=$(now)
    dir="$WORKDIR/$keys"
    mkdir -p "$dir"
    current=$dir
    f_ok=1 e_ok=1
    f_load=- f_bs=- f_bm=- f_rg=- f_ra=- f_fm=- f_rs=- f_rm=- f_start=- f_count=-
    e_load=- e_bs=- e_bm=- e_rg=- e_ra=- e_fm=- e_rs=- e_rm=- e_start=- e_count=-
    say "N = $keys; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

    # --- start both -------------------------------------------------------------
    FHTTP=$(free_port)
    FGRPC=$(free_port)
    while [ "$FGRPC" = "$FHTTP" ]; do FGRPC=$(free_port); done
    FLOG="$dir/ferrium.log"
    ferrium_conf "$dir/ferrium.toml" "$FHTTP" "$FGRPC" "$dir/ferrium-data" bve-source
    ferrium_start "$dir/ferrium.toml" "$FLOG"
    fsrc=$fpid
    wait_serving 120 "$fsrc" "$FLOG" ferrium_count "$FHTTP" >/dev/null || {
        died ferrium "$fsrc" "$FLOG" || true
        echo "ferrium-server did not start; see $FLOG" >&2
        exit 1
    }
    say "ferrium ready: http 127.0.0.1:$FHTTP, grpc 127.0.0.1:$FGRPC, pid $fsrc"

    ECLIENT=$(free_port)
    EPEER=$(free_port)
    while [ "$EPEER" = "$ECLIENT" ]; do EPEER=$(free_port); done
    ELOG="$dir/etcd.log"
    etcd_start "$dir/etcd-data" "$ECLIENT" "$EPEER" "$ELOG"
    esrc=$epid
    if wait_serving 120 "$esrc" "$ELOG" etcd_count "$ECLIENT" >/dev/null; then
        say "etcd ready: client 127.0.0.1:$ECLIENT, pid $esrc"
        quota_warning=$(grep -m1 'exceeds maximum recommended quota' "$ELOG" | sed 's/^[-0-9: .]*[A-Z] | //' || true)
    else
        died etcd "$esrc" "$ELOG" || true
        echo "etcd did not start; see $ELOG" >&2
        notes+=("etcd at $keys keys did not start: $(tail -3 "$ELOG" | tr '\n' ' ')")
        e_ok=0 e_load=failed
    fi

    # --- load -------------------------------------------------------------------
    if load ferrium "$FGRPC" "$fsrc" "$FLOG"; then
        f_load=$load_rate
        c=$(ferrium_count "$FHTTP") || c="no answer"
        check "ferrium $keys: keys after the load" "$keys" "$c"
    else
        f_ok=0 f_load=failed
    fi
    if [ "$e_ok" = 1 ]; then
        if load etcd "$ECLIENT" "$esrc" "$ELOG"; then
            e_load=$load_rate
            c=$(etcd_count "$ECLIENT") || c="no answer"
            check "etcd $keys: keys after the load" "$keys" "$c"
        else
            e_ok=0 e_load=failed
            notes+=("etcd at $keys keys: the load failed: $(grep -v '^etcd_load: [0-9]* of ' "$dir/etcd-load.err" | tail -3 | tr '\n' ' ')")
        fi
    fi
    say "data directories after the load: ferrium $(du -sb "$dir/ferrium-data" | cut -f1) bytes, etcd $(du -sb "$dir/etcd-data" | cut -f1) bytes"
    sleep "$SETTLE"

    # --- backup -----------------------------------------------------------------
    if [ "$f_ok" = 1 ]; then
        if backup ferrium "$fsrc" "$FLOG" "$dir/ferrium.snap" \
            "$CTL" --endpoints "127.0.0.1:$FHTTP" snapshot save "$dir/ferrium.snap"; then
            f_bs=$backup_s f_bm=$backup_mib f_rg=$rss_growth f_ra=$anon_growth f_fm=$file_mib
            c=$("$CTL" -o json snapshot status "$dir/ferrium.snap" |
                python3 -c 'import json, sys; print(json.load(sys.stdin)["keys"])') || c="no answer"
            check "ferrium $keys: keys in the backup (ferriumctl snapshot status)" "$keys" "$c"
        else
            f_ok=0 f_bs=failed
        fi
    fi
    if [ "$e_ok" = 1 ]; then
        if backup etcd "$esrc" "$ELOG" "$dir/etcd.db" \
            "$ETCDCTL" --endpoints "127.0.0.1:$ECLIENT" --command-timeout=3600s snapshot save "$dir/etcd.db"; then
            e_bs=$backup_s e_bm=$backup_mib e_rg=$rss_growth e_ra=$anon_growth e_fm=$file_mib
            say "etcd: snapshot status $("$ETCDCTL" snapshot status "$dir/etcd.db" -w json 2>&1)"
        else
            e_ok=0 e_bs=failed
            notes+=("etcd at $keys keys: the backup failed: $(tail -3 "$dir/etcd-backup.out" | tr '\n' ' ')")
        fi
    fi
    stop "$fsrc"
    stop "$esrc"

    # --- restore ----------------------------------------------------------------
    RHTTP=$(free_port)
    RGRPC=$(free_port)
    while [ "$RGRPC" = "$RHTTP" ]; do RGRPC=$(free_port); done
    REPEER=$(free_port)
    RECLIENT=$(free_port)
    while [ "$RECLIENT" = "$REPEER" ]; do RECLIENT=$(free_port); done
    if [ "$f_ok" = 1 ]; then
        if restore ferrium "$CTL" snapshot restore "$dir/ferrium.snap" --data-dir "$dir/ferrium-restored" \
            --id 1 --initial-members "1=127.0.0.1:$RHTTP/127.0.0.1:$RGRPC"; then
            f_rs=$restore_s f_rm=$restore_mib
        else
            f_ok=0 f_rs=failed
        fi
    fi
    if [ "$e_ok" = 1 ]; then
        if restore etcd "$ETCDCTL" snapshot restore "$dir/etcd.db" --data-dir "$dir/etcd-restored" \
            --name default --initial-cluster "default=http://127.0.0.1:$REPEER" \
            --initial-advertise-peer-urls "http://127.0.0.1:$REPEER"; then
            e_rs=$restore_s e_rm=$restore_mib
        else
            e_ok=0 e_rs=failed
            notes+=("etcd at $keys keys: the restore failed: $(tail -3 "$dir/etcd-restore.out" | tr '\n' ' ')")
        fi
    fi

    # --- the restored directories, one at a time ----------------------------------
    if [ "$f_ok" = 1 ]; then
        RFLOG="$dir/ferrium-restored.log"
        ferrium_conf "$dir/ferrium-restored.toml" "$RHTTP" "$RGRPC" "$dir/ferrium-restored" bve-restored
        t0=$(now)
        ferrium_start "$dir/ferrium-restored.toml" "$RFLOG"
        if c=$(wait_serving "$START_TIMEOUT" "$fpid" "$RFLOG" ferrium_count "$RHTTP"); then
            f_start=$(since "$t0")
        else
            died ferrium "$fpid" "$RFLOG" || true
            c="not serving"
        fi
        check "ferrium $keys: keys after the restore" "$keys" "$c"
        if [ "$c" = "$keys" ]; then f_count=PASS; else f_count=FAIL; fi
        stop "$fpid"
    fi
    if [ "$e_ok" = 1 ]; then
        RELOG="$dir/etcd-restored.log"
        t0=$(now)
        etcd_start "$dir/etcd-restored" "$RECLIENT" "$REPEER" "$RELOG"
        if c=$(wait_serving "$START_TIMEOUT" "$epid" "$RELOG" etcd_count "$RECLIENT"); then
            e_start=$(since "$t0")
        else
            died etcd "$epid" "$RELOG" || true
            c="not serving"
            notes+=("etcd at $keys keys: the restored member did not serve: $(tail -3 "$RELOG" | tr '\n' ' ')")
        fi
        check "etcd $keys: keys after the restore" "$keys" "$c"
        if [ "$c" = "$keys" ]; then e_count=PASS; else e_count=FAIL; fi
        stop "$epid"
    fi

    row ferrium "$keys" "$f_load" "$f_bs" "$f_bm" "$f_rg" "$f_ra" "$f_fm" "$f_rs" "$f_rm" "$f_start" "$f_count"
    row etcd "$keys" "$e_load" "$e_bs" "$e_bm" "$e_rg" "$e_ra" "$e_fm" "$e_rs" "$e_rm" "$e_start" "$e_count"
    say "N = $keys took $(since "$t_n") s"
    table_head >&2
    printf '%s\n' "${rows[@]: -2}" >&2
    if [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$dir/ferrium-data" "$dir/ferrium-restored" "$dir/etcd-data" "$dir/etcd-restored" \
            "$dir/ferrium.snap" "$dir/etcd.db"
    fi
    current=""
done

results
