#!/usr/bin/env bash
# Makes a development CA, a server certificate for localhost / 127.0.0.1 / ::1 signed by it,
# and a client certificate for mTLS tests, with the openssl CLI. Never for production; the
# private keys stay out of git (.gitignore).
#   usage: certs/gen-dev-certs.sh [DIR] [--force]     (DIR defaults to certs/dev)
set -euo pipefail

dir=""
force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    *) dir="$arg" ;;
  esac
done
[ -n "$dir" ] || dir="$(cd "$(dirname "$0")" && pwd)/dev"
mkdir -p "$dir"
cd "$dir"

if [ "$force" -eq 0 ] && [ -f ca.crt ] && [ -f server.crt ] && [ -f server.key ] && [ -f client.crt ] && [ -f client.key ]; then
  echo "dev certificates already in $dir (use --force to make new ones)"
  exit 0
fi

umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 825 -subj "/CN=gatehouse dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

issue() { # name, subject CN, extensions file
  openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$tmp/$1.csr" 2>/dev/null
  openssl x509 -req -in "$tmp/$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 825 -sha256 -extfile "$3" -out "$1.crt" 2>/dev/null
}

cat > "$tmp/server.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
cat > "$tmp/client.ext" <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EXT

issue server localhost "$tmp/server.ext"
issue client "gatehouse dev client" "$tmp/client.ext"
rm -f ca.srl
chmod 644 ca.crt server.crt client.crt
echo "dev CA, server (localhost, 127.0.0.1, ::1) and client certificates written to $dir"
