#!/bin/bash
# Installs the .deb on this machine, checks it, runs the installed server the
# way ferrium.service does, purges the package and checks that nothing is
# left; then checks the .rpm's file list. Needs root (dpkg -i).
#
#   contrib/test-packages.sh dist/ferrium_VERSION_ARCH.deb [dist/ferrium-VERSION-1.ARCH.rpm]
#
# `make package-test` builds both packages and runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:?usage: $0 DEB [RPM]}
rpm=${2:-}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# What `ferrium-server --version` says of its build: packages ship release
# builds (`make package-test PROFILE=debug` tests a dev-build package).
case "${FERRIUM_PACKAGE_PROFILE:-release}" in
    debug) build="debug build, opt-level 1" ;;
    *) build="release build, opt-level 3" ;;
esac
failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}

[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (it installs the package with dpkg -i)" >&2; exit 2; }
if dpkg-query -W -f='${Status}' ferrium 2>/dev/null | grep -q installed; then
    echo "$0: a ferrium package is already installed; remove it first (dpkg --purge ferrium)" >&2
    exit 2
fi
if getent passwd ferrium >/dev/null; then
    echo "$0: a ferrium user already exists; this test must see the package create it" >&2
    exit 2
fi

echo "== install $deb"
dpkg -i "$deb"
check "dpkg reports ferrium $version installed" \
    test "$(dpkg-query -W -f='${Status} ${Version}' ferrium)" = "install ok installed $version"
for f in /usr/bin/ferrium-server /usr/bin/ferriumctl; do
    check "$f is executable" test -x "$f"
done
check "unit installed" test -f /usr/lib/systemd/system/ferrium.service
check "config installed" test -f /etc/ferrium/config.toml
check "config is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}' ferrium | grep -q ' /etc/ferrium/config.toml '"
check "config readable by the service only (root:ferrium 0640)" \
    test "$(stat -c '%U:%G %a' /etc/ferrium/config.toml)" = "root:ferrium 640"
check "ferrium is a system user without a login shell" \
    bash -c '[ "$(getent passwd ferrium | cut -d: -f3)" -lt 1000 ] && getent passwd ferrium | grep -q nologin'
check "/var/lib/ferrium owned by ferrium, 0700" \
    test "$(stat -c '%U:%G %a' /var/lib/ferrium)" = "ferrium:ferrium 700"
check "ferrium-server --version says $version ($build)" \
    test "$(/usr/bin/ferrium-server --version)" = "ferrium-server $version ($build)"
check "ferriumctl --version says $version" \
    test "$(/usr/bin/ferriumctl --version)" = "ferriumctl $version"
check "the packaged config validates as the ferrium user" \
    runuser -u ferrium -- /usr/bin/ferrium-server --config /etc/ferrium/config.toml --validate-config
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify /usr/lib/systemd/system/ferrium.service 2>&1 || echo "exit status $?")
    if [ -z "$out" ]; then pass "systemd-analyze verify is clean"; else fail "systemd-analyze verify: $out"; fi
fi

# The unit's ExecStart as its User=, with NOTIFY_SOCKET as systemd sets it.
if python3 -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1",8001))==0)'; then
    echo "== run the installed server like ferrium.service (Type=notify)"
    if contrib/systemd/notify-check.py --user ferrium -- \
        $(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/ferrium.service); then
        pass "installed server sent READY=1, served ferriumctl, sent STOPPING=1 and exited 0"
    else
        fail "installed server under a notify socket"
    fi
else
    echo "skip running the installed server: 127.0.0.1:8001 (the packaged http_addr) is in use"
fi

echo "== upgrade keeps the administrator's choices"
# An administrator tightens or loosens modes; installing the package again
# (dpkg runs postinst configure with the old version) must keep them.
chmod 0600 /etc/ferrium/config.toml
chmod 0711 /etc/ferrium
chmod 0750 /var/lib/ferrium
dpkg -i "$deb" >/dev/null
check "config mode kept on upgrade (0600)" test "$(stat -c '%a' /etc/ferrium/config.toml)" = "600"
check "/etc/ferrium mode kept on upgrade (0711)" test "$(stat -c '%a' /etc/ferrium)" = "711"
check "/var/lib/ferrium mode kept on upgrade (0750)" test "$(stat -c '%a' /var/lib/ferrium)" = "750"
# A deleted conffile stays deleted, and the upgrade still succeeds.
rm /etc/ferrium/config.toml
if dpkg -i "$deb" >/dev/null 2>&1; then pass "upgrade with the conffile deleted succeeds"; else
    fail "upgrade with the conffile deleted: dpkg -i failed"
    dpkg --configure -a >/dev/null 2>&1 || true
fi
check "dpkg reports ferrium installed after it" \
    test "$(dpkg-query -W -f='${Status}' ferrium)" = "install ok installed"

echo "== purge"
dpkg --purge ferrium
check "package gone" bash -c "! dpkg-query -W -f='\${Status}' ferrium 2>/dev/null | grep -q installed"
for f in /usr/bin/ferrium-server /usr/bin/ferriumctl /usr/lib/systemd/system/ferrium.service \
    /etc/ferrium /var/lib/ferrium; do
    check "$f removed" test ! -e "$f"
done
check "ferrium user removed" bash -c '! getent passwd ferrium'
check "ferrium group removed" bash -c '! getent group ferrium'

if [ -n "$rpm" ]; then
    echo "== $rpm"
    expected="/etc/ferrium
/etc/ferrium/config.toml
/usr/bin/ferrium-server
/usr/bin/ferriumctl
/usr/lib/systemd/system/ferrium.service
/usr/share/doc/ferrium/CONFIG.md
/usr/share/doc/ferrium/README.md
/var/lib/ferrium"
    listed=$(rpm -qpl "$rpm" 2>/dev/null)
    if [ "$listed" = "$expected" ]; then pass "rpm -qpl lists the expected files"; else
        fail "rpm -qpl lists:"; echo "$listed"
    fi
    check "rpm version is $version" test "$(rpm -qp --qf '%{VERSION}' "$rpm" 2>/dev/null)" = "$version"
    check "rpm marks the config as %config" bash -c "rpm -qpc '$rpm' 2>/dev/null | grep -qx /etc/ferrium/config.toml"
    check "rpm creates the ferrium user before installing" bash -c "rpm -qp --scripts '$rpm' 2>/dev/null | grep -q 'useradd --system'"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all package checks passed"
