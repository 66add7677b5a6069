#!/usr/bin/env bash
# Set-up for bench/run: Debian's nginx and haproxy (apt-get, when missing),
# Node's ws, socket.io-client and socket.io in bench/node_modules (npm ci, from
# package-lock.json), and python-socketio with aiohttp in bench/.venv (pip,
# from requirements-socketio.txt), the bench's own environment.  Node 20 and
# npm must already be installed.  A second run with nothing missing does no
# network work.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing+=(nginx)
command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || missing+=(haproxy)
command -v taskset >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} with apt-get" >&2
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup: node and npm are needed (Node 20 or later)" >&2
    exit 1
fi

# npm ci again only when the lock file is newer than the last install.
if [ ! -f node_modules/.installed ] || [ package-lock.json -nt node_modules/.installed ]; then
    npm ci --no-audit --no-fund
    touch node_modules/.installed
fi

# The python-socketio comparison server's environment, again only when the
# requirements are newer than the last install.
if [ ! -f .venv/.installed ] || [ requirements-socketio.txt -nt .venv/.installed ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-socketio.txt
    touch .venv/.installed
fi
