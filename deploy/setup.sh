#!/usr/bin/env bash
# Installs everything building and testing Chorus needs on a fresh Debian 12:
# the C toolchain and libraries, clang (libFuzzer), Python websockets and Node
# for the integration tests, Chromium for the browser tests, nginx and haproxy
# for the deploy tests (their services are not used: the tests run their own), then the tests'
# npm packages (npm ci in tests/). Idempotent: apt is skipped when every
# package is already there. Runs as root, or through sudo otherwise; needs no
# terminal (CI runs it with CI=true and no stdin).
set -euo pipefail

cd "$(dirname "$0")/.."

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential cmake pkg-config
  libwebsockets-dev libwebsockets-evlib-ev libzmq3-dev libjansson-dev libcmocka-dev uthash-dev libjwt-dev libssl-dev libraft-dev libuv1-dev libsystemd-dev libcurl4-openssl-dev zlib1g-dev
  clang libclang-rt-14-dev
  python3 python3-websockets python3-zmq python3-yaml
  nodejs npm
  chromium
  curl ca-certificates iproute2
  openssl
  nginx haproxy
)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${PACKAGES[@]}"; do
  case "$p" in
    # A Node.js from elsewhere (NodeSource's package bundles npm and conflicts
    # with Debian's npm) is fine as long as node and npm run.
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
  esac
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" apt-get install -y "${missing[@]}"
else
  echo "setup.sh: every Debian package is already installed"
fi

# The tests must run with Debian's Python, which has python3-websockets.
/usr/bin/python3 -c 'import websockets' || {
  echo "setup.sh: /usr/bin/python3 cannot import websockets" >&2
  exit 1
}

# Node packages for the integration, browser and SDK tests (ws, playwright-core,
# typescript for the chorus.d.ts check),
# exactly as locked in tests/package-lock.json.
(cd tests && npm ci --no-audit --no-fund)

echo "setup.sh: done"
