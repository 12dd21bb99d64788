#!/usr/bin/env bash
# The README's test command: install everything the test suite needs, then run all of it.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# As root (CI, a fresh Debian machine) it installs the Debian peer tools the tests compare udpkit
# with, and then missing tools or root make tests fail instead of skip (UDPKIT_REQUIRE_PEERS=1).
# As a normal user it installs nothing system-wide; tests that need root or a tool skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages -> a command each provides: the real tools udpkit is tested beside.
declare -A PEERS=(
  [iproute2]=ss
  [socat]=socat
  [procps]=ps
  [netcat-openbsd]=nc
  [tshark]=tshark
  [nftables]=nft
  [nmap]=nmap
  [ntpsec-ntpdig]=ntpdig
  [chrony]=chronyd
  [bind9-dnsutils]=dig
  [nsd]=nsd  # an authoritative DNS server, whose answers the DNS responder's are compared with
  [netbase]=/etc/services
  [avahi-daemon]=avahi-daemon
  [wsdd]=wsdd
  [util-linux]=unshare
  [prometheus]=prometheus
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [prometheus-node-exporter]=prometheus-node-exporter
  [snmpd]=snmpd
  [gcc]=gcc  # builds udpkit's optional C extensions (recvmmsg/sendmmsg, ss's lines), so their tests run too
  [libc6-dev]=/usr/include/stdio.h
)

missing=()
for pkg in "${!PEERS[@]}"; do
  want=${PEERS[$pkg]}
  if [ "${want:0:1}" = / ]; then [ -e "$want" ] || missing+=("$pkg"); continue; fi
  command -v "$want" >/dev/null 2>&1 || missing+=("$pkg")
done
python_ok=1
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || python_ok=0
[ "$python_ok" = 1 ] || missing+=(python3 python3-venv)
# Python's headers, for the same extension
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  >/dev/null 2>&1 || missing+=(python3-dev)

if [ "$(id -u)" = 0 ]; then
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  export UDPKIT_REQUIRE_PEERS=1
elif [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: not root, so not installing ${missing[*]}; tests that need them will skip" >&2
fi

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e '.[test]'

set +e
"$venv/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
