#!/bin/sh
# Lays out the files both packages install, under a staging root:
#
#   contrib/stage-package.sh BINDIR ROOT
#
# BINDIR holds ferrium-server and ferriumctl (a cargo target/debug or
# target/release directory). Binaries are copied without debug sections.
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BINDIR ROOT" >&2; exit 2; }
bindir=$1
root=$2

for b in ferrium-server ferriumctl; do
    [ -x "$bindir/$b" ] || { echo "$bindir/$b is missing: run 'make build' first" >&2; exit 1; }
done
rm -rf "$root"
install -d -m 0755 "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/etc/ferrium" \
    "$root/usr/share/doc/ferrium"
for b in ferrium-server ferriumctl; do
    install -m 0755 "$bindir/$b" "$root/usr/bin/$b"
    strip --strip-debug "$root/usr/bin/$b"
done
install -m 0644 contrib/systemd/ferrium.service "$root/usr/lib/systemd/system/ferrium.service"
install -m 0640 etc/ferrium.toml "$root/etc/ferrium/config.toml"
install -m 0644 README.md CONFIG.md "$root/usr/share/doc/ferrium/"
