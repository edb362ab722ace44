#!/bin/sh
# Builds dist/ferrium_VERSION_ARCH.deb with dpkg-deb from contrib/debian/.
#
#   contrib/debian/build-deb.sh BINDIR [OUTDIR]
#
# The version is Cargo.toml's; the files are those of contrib/stage-package.sh.
set -eu
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: $0 BINDIR [OUTDIR]" >&2; exit 2; }
bindir=$1
out=${2:-dist}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
root="$out/deb-root"

mkdir -p "$out"
contrib/stage-package.sh "$bindir" "$root"
install -m 0644 contrib/debian/copyright "$root/usr/share/doc/ferrium/copyright"
install -d -m 0755 "$root/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" contrib/debian/control.in \
    >"$root/DEBIAN/control"
echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)" >>"$root/DEBIAN/control"
install -m 0644 contrib/debian/conffiles "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 0755 "contrib/debian/$s" "$root/DEBIAN/$s"
done
deb="$out/ferrium_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb"
rm -rf "$root"
echo "$deb"
