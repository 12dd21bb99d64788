#!/usr/bin/env bash
# Install udpkit from this checkout into its own virtual environment and put `udpkit` on the PATH.
#
#   bash scripts/install.sh            # as root: /opt/udpkit, linked from /usr/local/bin/udpkit
#   PREFIX=~/.udpkit bash scripts/install.sh   # anywhere else (link it yourself)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/opt/udpkit}
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends python3 python3-venv >/dev/null
  else
    echo "install.sh: python3 with venv is needed (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
# The optional C extensions (recvmmsg/sendmmsg: a batch of datagrams per system call; ss's lines)
# need a C compiler and Python's headers at install time; without them udpkit installs and works,
# reading one datagram per call. As root, install them (gcc, python3-dev) when missing.
if ! command -v cc >/dev/null 2>&1 || ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends gcc libc6-dev python3-dev >/dev/null
  else
    echo "install.sh: no C compiler or Python headers: installing without the C extensions (slower listen and ss)" >&2
  fi
fi
[ -x "$prefix/bin/python" ] || python3 -m venv "$prefix"
"$prefix/bin/python" -m pip install -q --upgrade pip >/dev/null
"$prefix/bin/python" -m pip install -q .
if [ -z "${PREFIX:-}" ] && [ -w /usr/local/bin ]; then
  ln -sf "$prefix/bin/udpkit" /usr/local/bin/udpkit
fi
echo "udpkit installed in $prefix" >&2
