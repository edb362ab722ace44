#!/usr/bin/env bash
# Compares Ferrium's HTTP/1.1 server with nginx serving the same small JSON
# body, with the same wrk settings, in one run; prints both rates and the ratio.
#
#   contrib/bench/http-vs-nginx.sh            # 64 connections, 2 threads, 10 s
#   DURATION=30s CONNS=128 contrib/bench/http-vs-nginx.sh
#
# Needs wrk and nginx (Debian: apt-get install wrk nginx). nginx runs from a
# temporary directory with its own configuration on a loopback port; nothing
# is installed or left behind. NGINX_WORKERS (default: auto, one per CPU) and
# FERRIUM_BENCH_THREADS (default: one per CPU) size the two servers alike.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
FERRIUM_PORT=${FERRIUM_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
NGINX_WORKERS=${NGINX_WORKERS:-auto}
BODY='{"status":"healthy","service":"ferrium","version":"0.1.0"}'

for tool in wrk nginx cargo; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

# Our crate at full optimisation, dependencies from the shared dev build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/ferrium/target}
CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo build --quiet --example http-hello
FERRIUM_BIN="$CARGO_TARGET_DIR/debug/examples/http-hello"

tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/logs"
cat > "$tmp/nginx.conf" <<CONF
worker_processes $NGINX_WORKERS;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /hello {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}
CONF

nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/logs/error.log" &
pids+=($!)
"$FERRIUM_BIN" "127.0.0.1:$FERRIUM_PORT" 2>"$tmp/ferrium.log" &
pids+=($!)

wait_for() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$1/hello" >/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    exit 1
}
wait_for "$NGINX_PORT"
wait_for "$FERRIUM_PORT"

# Both must serve the same bytes.
[ "$(curl -s "http://127.0.0.1:$NGINX_PORT/hello")" = "$BODY" ] || { echo "nginx body differs" >&2; exit 1; }
[ "$(curl -s "http://127.0.0.1:$FERRIUM_PORT/hello")" = "$BODY" ] || { echo "ferrium body differs" >&2; exit 1; }

bench() {
    local name=$1 port=$2 out
    wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$port/hello" >/dev/null # warm-up
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/hello")
    echo "== $name" >&2
    echo "$out" >&2
    if grep -q -e "Non-2xx" -e "Socket errors" <<<"$out"; then
        echo "$name: errors during the run" >&2
    fi
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, body ${#BODY} bytes, $(nproc) CPUs" >&2
ferrium_rps=$(bench ferrium "$FERRIUM_PORT")
nginx_rps=$(bench nginx "$NGINX_PORT")
ratio=$(awk -v f="$ferrium_rps" -v n="$nginx_rps" 'BEGIN { printf "%.2f", f / n }')
echo
echo "ferrium: $ferrium_rps req/s"
echo "nginx:   $nginx_rps req/s"
echo "ratio:   $ratio (ferrium / nginx; target >= 0.80)"
