#!/bin/sh
# Builds dist/ferrium-VERSION-1.ARCH.rpm with rpmbuild from contrib/rpm/ferrium.spec.
#
#   contrib/rpm/build-rpm.sh BINDIR [OUTDIR]
#
# On Debian, rpmbuild comes from the `rpm` package (apt-get install rpm).
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 BINDIR [OUTDIR]" >&2; exit 2; }
command -v rpmbuild >/dev/null || {
    echo "rpmbuild not found: install it (Debian/Ubuntu: apt-get install rpm; Fedora: dnf install rpm-build)" >&2
    exit 1
}
bindir=$1
out=${2:-dist}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage="$out/rpm-stage"
top="$out/rpmbuild"

contrib/stage-package.sh "$bindir" "$stage"
rm -rf "$top"
mkdir -p "$top"
rpmbuild -bb --quiet \
    --define "_topdir $top" \
    --define "version $version" \
    --define "stage $stage" \
    contrib/rpm/ferrium.spec
rpm=$(find "$top/RPMS" -name "ferrium-$version-1.*.rpm" | head -n 1)
mv "$rpm" "$out/"
rm -rf "$stage" "$top"
echo "$out/$(basename "$rpm")"
