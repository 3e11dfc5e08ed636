#!/usr/bin/env bash
# deploy.deb_package: builds the Debian package as `make deb` does (scripts/make-deb, which keeps
# its build directory under build/deb/src/ between runs), then checks what an operator gets:
# the package unpacked into a scratch root (dpkg-deb -x) runs `quarry --version` and accepts the
# shipped /etc/quarry/quarry.json, which is a conffile; the unit passes systemd-analyze verify
# (a copy whose ExecStart is the scratch root's binary, since verify wants the program to exist)
# and keeps its hardening; the logrotate snippet parses; lintian reports no errors.
# Exit 77 (skipped) without dpkg-buildpackage, debhelper or lintian.
#
# Usage: deb_package.sh SOURCE_DIR FAISS_PREFIX
set -uo pipefail

src=${1:?usage: deb_package.sh SOURCE_DIR FAISS_PREFIX}
faiss=${2:-}
for tool in dpkg-buildpackage dh dpkg-deb lintian fakeroot; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "skipped: $tool not found (install debhelper, lintian and fakeroot: scripts/bootstrap)"
    exit 77
  fi
done

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

scratch=$(mktemp -d /tmp/quarry-deb-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

version=$(sed -n 's/^project(quarry VERSION \([0-9.]*\) .*/\1/p' "$src/CMakeLists.txt")
if ! FAISS_ROOT=$faiss LINTIAN=0 JOBS=${JOBS:-2} "$src/scripts/make-deb" >"$scratch/build.log" 2>&1; then
  tail -n 60 "$scratch/build.log"
  echo "FAIL: the package did not build (log above)"
  exit 1
fi
deb=$(ls "$src"/build/deb/quarry_"$version"_*.deb 2>/dev/null | head -n 1)
[ -f "$deb" ] || { echo "FAIL: no quarry_${version}_*.deb in $src/build/deb"; exit 1; }
ok "built $(basename "$deb")"

# --- the package's contents, unpacked into a scratch root --------------------------------------
root=$scratch/root
dpkg-deb -x "$deb" "$root" || { echo "FAIL: dpkg-deb -x"; exit 1; }
dpkg-deb -e "$deb" "$scratch/control"
out=$("$root/usr/bin/quarry" --version 2>&1)
if [ $? -eq 0 ] && grep -q "^quarry $version\$" <<<"$out" && grep -q 'FAISS *1\.7\.3' <<<"$out"; then
  ok "quarry --version from the scratch root: $(head -n 1 <<<"$out")"
else
  fail "quarry --version from the scratch root: $out"
fi
# /usr/bin/quarry is the launcher (libc alone), which starts the program in /usr/libexec/quarry.
core=$root/usr/libexec/quarry/quarry-core
if [ -x "$core" ] && [ "$(ldd "$root/usr/bin/quarry" | grep -c '=>')" -eq 1 ]; then
  ok "usr/bin/quarry links libc alone and starts usr/libexec/quarry/quarry-core"
else
  fail "the launcher or usr/libexec/quarry/quarry-core: $(ldd "$root/usr/bin/quarry" | tr '\n' ' ')"
fi
# FAISS is inside the program, not a library the package would need.
if ldd "$core" | grep -qi faiss; then fail "quarry-core links a FAISS shared library"; else ok "FAISS linked statically"; fi
if ! dpkg-deb -f "$deb" Depends | grep -q 'libsqlite3-0'; then
  fail "Depends lacks the shared libraries (dpkg-shlibdeps): $(dpkg-deb -f "$deb" Depends)"
else
  ok "Depends: $(dpkg-deb -f "$deb" Depends)"
fi
if grep -qx /etc/quarry/quarry.json "$scratch/control/conffiles" 2>/dev/null; then
  ok "/etc/quarry/quarry.json is a conffile"
else
  fail "/etc/quarry/quarry.json is not in DEBIAN/conffiles"
fi
if out=$(env -u QUARRY_CONFIG "$root/usr/bin/quarry" config --config "$root/etc/quarry/quarry.json" 2>&1) &&
   grep -q '^data.dir *= /var/lib/quarry ' <<<"$out"; then
  ok "the shipped configuration passes quarry config"
else
  fail "quarry config --config etc/quarry/quarry.json: $out"
fi
for f in lib/systemd/system/quarry.service etc/logrotate.d/quarry usr/share/man/man1/quarry.1.gz \
         usr/share/doc/quarry/copyright; do
  [ -f "$root/$f" ] && ok "/$f installed" || fail "/$f missing from the package"
done
# Installed, not enabled (dh_installsystemd --no-enable): the postinst enables the unit again only
# where it was installed before and the administrator had enabled it ("debian-installed").
if grep -q 'deb-systemd-helper enable' "$scratch/control/postinst" &&
   ! grep -q "deb-systemd-helper debian-installed 'quarry.service'" "$scratch/control/postinst"; then
  fail "postinst enables quarry.service on a fresh install"
else
  ok "postinst does not enable quarry.service on a fresh install"
fi

# --- the unit ------------------------------------------------------------------------------
unit=$root/lib/systemd/system/quarry.service
for directive in 'DynamicUser=yes' 'StateDirectory=quarry' 'LogsDirectory=quarry' 'ProtectSystem=strict' \
  'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' 'NoNewPrivileges=yes' \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' 'SystemCallFilter=@system-service' \
  'SystemCallArchitectures=native' 'MemoryDenyWriteExecute=yes' 'LimitNOFILE=65536' 'CapabilityBoundingSet=' \
  'ExecStart=/usr/bin/quarry serve --config /etc/quarry/quarry.json' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'KillSignal=SIGTERM' 'Restart=on-failure' 'Type=exec'; do
  grep -qxF "$directive" "$unit" || fail "the unit lacks $directive"
done
# TimeoutStopSec must leave room for the shipped server.shutdown_grace_s.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)$/\1/p' "$unit")
grace=$(sed -n 's/^ *"shutdown_grace_s": *\([0-9]*\).*/\1/p' "$root/etc/quarry/quarry.json")
if [ -n "$stop" ] && [ -n "$grace" ] && [ "$stop" -gt "$grace" ]; then
  ok "TimeoutStopSec=$stop > server.shutdown_grace_s=$grace"
else
  fail "TimeoutStopSec ($stop) is not above server.shutdown_grace_s ($grace)"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  mkdir -p "$scratch/units"
  sed -e "s|^ExecStart=/usr/bin/quarry|ExecStart=$root/usr/bin/quarry|" "$unit" >"$scratch/units/quarry.service"
  if out=$(MANPATH=$root/usr/share/man systemd-analyze verify "$scratch/units/quarry.service" 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify: clean"
  else
    fail "systemd-analyze verify: $out"
  fi
  # The exposure score, for the record (systemd 252+ can judge a unit file offline).
  systemd-analyze security --offline=yes "$scratch/units/quarry.service" 2>/dev/null | tail -n 1
else
  echo "note: systemd-analyze not found; the unit was not verified"
fi
if command -v logrotate >/dev/null 2>&1; then
  # --debug parses and plans without rotating anything.
  if out=$(logrotate --debug --state "$scratch/logrotate.state" "$root/etc/logrotate.d/quarry" 2>&1) &&
     ! grep -qi 'error' <<<"$out"; then
    ok "logrotate parses /etc/logrotate.d/quarry"
  else
    fail "logrotate: $out"
  fi
else
  echo "note: logrotate not found; /etc/logrotate.d/quarry was not parsed"
fi

# --- lintian ------------------------------------------------------------------------------
lint=$(lintian --fail-on error "$deb" 2>&1)
rc=$?
[ -n "$lint" ] && echo "$lint"
if [ $rc -ne 0 ]; then fail "lintian reports errors (above)"; else ok "lintian: no errors"; fi

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all package checks passed"
