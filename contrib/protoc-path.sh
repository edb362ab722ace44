#!/bin/sh
# Prints the path of a protoc for build scripts that read PROTOC: the one the
# protoc-bin-vendored crate ships (a build dependency, so it is in cargo's
# registry after `cargo fetch`), else a system protoc. Ferrium's own build
# finds the vendored protoc by itself; the etcd-client crate, a test
# dependency, compiles etcd's .proto files in its build script and needs
# PROTOC set. `make` and `.ci/run` export it.
set -eu
if [ -n "${PROTOC:-}" ]; then
    echo "$PROTOC"
    exit 0
fi
case "$(uname -m)" in
    x86_64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch_64 ;;
    ppc64le) arch=ppcle_64 ;;
    s390x) arch=s390_64 ;;
    i386 | i686) arch=x86_32 ;;
    *) arch=unknown ;;
esac
find_vendored() {
    ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/protoc-bin-vendored-linux-"$arch"-*/bin/protoc 2>/dev/null |
        sort | tail -n 1
}
p=$(find_vendored)
if [ -z "$p" ]; then
    cargo fetch --quiet >/dev/null 2>&1 || true
    p=$(find_vendored)
fi
if [ -n "$p" ]; then
    echo "$p"
    exit 0
fi
if command -v protoc >/dev/null 2>&1; then
    command -v protoc
    exit 0
fi
echo "no protoc found: run 'cargo fetch' (it downloads protoc-bin-vendored), or install protobuf-compiler" >&2
exit 1
