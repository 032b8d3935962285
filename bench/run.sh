#!/usr/bin/env bash
# Load benchmark: gatehouse against a bare Pingora passthrough, same upstream, same load.
# Loopback only; every run is bounded by --duration. Prints requests/s, p50/p99 latency,
# the ratio to the bare proxy, and the gateway's RSS.
#   bench/run.sh [--smoke] [--duration S] [--connections C]
# --smoke: 2 s per case, no speed assertion; fails only if a case served no 2xx.
# To add a case: add a route to the config below and a line to the CASES table.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=32
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; duration=2; connections=8 ;;
    --duration) duration="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

command -v wrk >/dev/null || { echo "bench: wrk is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
echo "== building release binaries"
cargo build --release --locked --bin gatehouse --example bare_proxy --example bench_upstream --example bench_tokens >&2

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "bench: $1 did not come up" >&2
  return 1
}

up_port=$(port); bare_port=$(port); gw_port=$(port); admin_port=$(port)
issuer="http://127.0.0.1:$up_port"
"$target/release/examples/bench_tokens" "$work" "$issuer" 1000
token=$(head -n 1 "$work/tokens.txt")
api_key="bench-api-key-0123456789"
api_hash=$(printf '%s' "$api_key" | "$target/release/gatehouse" apikey hash)

"$target/release/examples/bench_upstream" "127.0.0.1:$up_port" "$work/jwks.json" & pids+=($!)
wait_http "http://127.0.0.1:$up_port/"
"$target/release/examples/bare_proxy" "127.0.0.1:$bare_port" "127.0.0.1:$up_port" 1 >"$work/bare.log" 2>&1 & pids+=($!)

cat >"$work/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$gw_port"]
threads = 1
[admin]
listen = "127.0.0.1:$admin_port"
[log]
level = "warn"
access_log = false
audit = false
[upstream.app]
servers = ["127.0.0.1:$up_port"]
[[bearer]]
issuer = "$issuer"
audiences = ["bench-api"]
jwks_uri = "$issuer/jwks"
[[api_key]]
name = "bench"
hash = "$api_hash"
subject = "svc-bench"
[[route]]
name = "open"
path = "/open"
upstream = "app"
auth = ["none"]
[[route]]
name = "bearer"
path = "/bearer"
upstream = "app"
auth = ["bearer"]
[[route]]
name = "keys"
path = "/keys"
upstream = "app"
auth = ["api_key"]
TOML
"$target/release/gatehouse" run -c "$work/gateway.toml" --upgrade-sock "$work/upgrade.sock" >"$work/gateway.log" 2>&1 & gw_pid=$!; pids+=($gw_pid)
wait_http "http://127.0.0.1:$admin_port/readyz"
wait_http "http://127.0.0.1:$bare_port/"

cat >"$work/rotate.lua" <<LUA
local tokens = {}
for line in io.lines("$work/tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/bearer/x", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

# name | url | extra wrk arguments
CASES=(
  "bare-pingora|http://127.0.0.1:$bare_port/open/x|"
  "none|http://127.0.0.1:$gw_port/open/x|"
  "bearer-repeated|http://127.0.0.1:$gw_port/bearer/x|-H|Authorization: Bearer $token"
  "bearer-1000-rotating|http://127.0.0.1:$gw_port/bearer/x|-s|$work/rotate.lua"
  "api-key|http://127.0.0.1:$gw_port/keys/x|-H|X-Api-Key: $api_key"
)

to_ms() { # "1.23ms" | "456.00us" | "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

failed=0
bare_rps=""
printf '\n%-22s %12s %10s %10s %8s\n' case "req/s" "p50 ms" "p99 ms" "ratio"
for entry in "${CASES[@]}"; do
  IFS='|' read -r -a fields <<<"$entry"
  name="${fields[0]}"; url="${fields[1]}"; extra=("${fields[@]:2}")
  [ "${#extra[@]}" -eq 1 ] && [ -z "${extra[0]}" ] && extra=()
  if [ "$smoke" -eq 0 ]; then
    wrk -t1 -c"$connections" -d1s "${extra[@]}" "$url" >/dev/null 2>&1 || true
  fi
  out=$(wrk --latency -t1 -c"$connections" -d"${duration}s" "${extra[@]}" "$url" 2>&1)
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  bad=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
  [ -n "$bare_rps" ] || bare_rps="$rps"
  ratio=$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  printf '%-22s %12s %10s %10s %8s\n' "$name" "${rps:-0}" "$(to_ms "${p50:-0}")" "$(to_ms "${p99:-0}")" "$ratio"
  if [ -z "$rps" ] || awk -v r="$rps" 'BEGIN { exit !(r <= 0) }' || [ -n "$bad" ]; then
    echo "bench: case $name failed (non-2xx: ${bad:-0})" >&2
    echo "$out" >&2
    failed=1
  fi
done
rss=$(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$gw_pid/status")
echo
echo "gatehouse RSS after the run: $rss"
echo "(1 proxy thread each; wrk -t1 -c$connections -d${duration}s; loopback; $(nproc) cores)"
exit "$failed"
