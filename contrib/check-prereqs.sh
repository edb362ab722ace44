#!/bin/sh
# Checks what building Ferrium needs beyond Rust: a C++ compiler and libclang
# (RocksDB is compiled from source and its Rust bindings are generated with
# libclang), plus curl, python3, openssl, etcd and etcdctl used by the test
# suite (the TLS tests make their certificates with the openssl commands
# CONFIG.md shows; the etcd API tests compare Ferrium with etcd 3.4; the
# console test drives Chromium through ChromeDriver, and the monitoring test
# checks the alert rules with promtool). Installs what is missing with
# apt-get when run as root on Debian/Ubuntu; otherwise prints the exact
# command and stops.
set -eu

missing=""
command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust with https://rustup.rs (rustup default stable), then retry." >&2
    exit 1
}
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing="$missing g++"
have_libclang=no
if [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1; then
    have_libclang=yes
else
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
             /usr/lib/*-linux-gnu/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* /usr/lib64/libclang.so*; do
        [ -e "$f" ] && have_libclang=yes && break
    done
fi
[ "$have_libclang" = yes ] || missing="$missing libclang-dev"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
# etcd 3.4 and etcdctl: the etcd API's conformance tests run the same
# etcdctl commands against Ferrium and a real etcd, and compare.
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
command -v etcdctl >/dev/null 2>&1 || missing="$missing etcd-client"
# The console's browser test drives Debian's Chromium through ChromeDriver;
# the monitoring test checks contrib/prometheus/alerts.yml with promtool.
# Those tests say so and pass without them, so these are installed when we
# can and otherwise only named.
optional=""
[ -x /usr/bin/chromium ] || optional="$optional chromium"
[ -x /usr/bin/chromedriver ] || optional="$optional chromium-driver"
command -v promtool >/dev/null 2>&1 || optional="$optional prometheus"

[ -z "$missing$optional" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing build and test prerequisites:$missing$optional" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing $optional
    exit 0
fi
if [ -n "$optional" ]; then
    echo "Not installed:$optional (the console and monitoring tests skip without them;" >&2
    echo "  install with:  sudo apt-get install -y$optional)" >&2
fi
[ -z "$missing" ] && exit 0
echo "Missing build prerequisites:$missing" >&2
echo "Install them with:  sudo apt-get install -y$missing" >&2
echo "(on Fedora/RHEL: sudo dnf install -y gcc-c++ clang-devel curl python3 openssl etcd; Chromium, ChromeDriver and promtool for the console and monitoring tests)" >&2
exit 1
