#!/usr/bin/env bash
# Load benchmark: gatehouse against a bare Pingora passthrough, same upstream, same load.
# Loopback only; every run is bounded by --duration. Prints requests/s, p50/p99 latency,
# the ratio to the bare proxy, and the gateway's RSS.
#   bench/run.sh [--smoke] [--duration S] [--connections C] [--rounds N]
# --smoke: 2 s per case, no speed assertion; fails only if a case served no 2xx.
# To add a case: add a route to the config below and a line to the CASES table.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5
rounds=3
connections=32
smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; duration=2; connections=8 ;;
    --duration) duration="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

command -v wrk >/dev/null || { echo "bench: wrk is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
echo "== building release binaries"
cargo build --release --locked --bin gatehouse --example bare_proxy --example bench_upstream --example bench_tokens --example bench_login --example session_memory >&2

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# On 2+ cores the proxies get a core of their own and wrk and the upstream share another,
# so the figures measure the proxy, not the scheduler.
pin_proxy=(); pin_load=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_proxy=(taskset -c 1); pin_load=(taskset -c 0)
fi

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

"${pin_load[@]}" "$target/release/examples/bench_upstream" "127.0.0.1:$up_port" "$work/jwks.json" & pids+=($!)
wait_http "http://127.0.0.1:$up_port/"
"${pin_proxy[@]}" "$target/release/examples/bare_proxy" "127.0.0.1:$bare_port" "127.0.0.1:$up_port" 1 >"$work/bare.log" 2>&1 & bare_pid=$!; pids+=($bare_pid)

cat >"$work/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$gw_port"]
public_url = "http://127.0.0.1:$gw_port"
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
[[idp]]
name = "bench"
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-client-secret"
[[api_key]]
name = "bench"
hash = "$api_hash"
subject = "svc-bench"
[[rate_limit]]
name = "per-ip"
key = "client_ip"
limit = "100000000/second"
[[route]]
name = "open"
path = "/open"
upstream = "app"
auth = ["none"]
[[route]]
name = "limited"
path = "/limited"
upstream = "app"
auth = ["none"]
rate_limit = ["per-ip"]
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
[[route]]
name = "session"
path = "/session"
upstream = "app"
auth = ["session"]
[[route]]
name = "guarded"
path = "/guarded"
upstream = "app"
auth = ["bearer"]
policy = "policy.toml"
rate_limit = ["per-ip"]
TOML
cat >"$work/policy.toml" <<TOML
[roles]
reader = ["bench:read"]
[[binding]]
role = "reader"
groups = ["staff"]
[[rule]]
name = "admin"
paths = ["/guarded/admin/**"]
deny = true
[[rule]]
name = "read"
paths = ["/guarded/**"]
methods = ["GET"]
require = "bench:read"
TOML
"${pin_proxy[@]}" "$target/release/gatehouse" run -c "$work/gateway.toml" --upgrade-sock "$work/upgrade.sock" >"$work/gateway.log" 2>&1 & gw_pid=$!; pids+=($gw_pid)
wait_http "http://127.0.0.1:$admin_port/readyz"
wait_http "http://127.0.0.1:$bare_port/"
session_cookie=$("$target/release/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$gw_port")

cat >"$work/rotate.lua" <<LUA
local tokens = {}
for line in io.lines("$work/tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/bearer/x", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA

# name | proxy pid | url | extra wrk arguments
CASES=(
  "bare-pingora|$bare_pid|http://127.0.0.1:$bare_port/open/x|"
  "none|$gw_pid|http://127.0.0.1:$gw_port/open/x|"
  "none+rate-limit|$gw_pid|http://127.0.0.1:$gw_port/limited/x|"
  "bearer-repeated|$gw_pid|http://127.0.0.1:$gw_port/bearer/x|-H|Authorization: Bearer $token"
  "bearer-1000-rotating|$gw_pid|http://127.0.0.1:$gw_port/bearer/x|-s|$work/rotate.lua"
  "api-key|$gw_pid|http://127.0.0.1:$gw_port/keys/x|-H|X-Api-Key: $api_key"
  "session|$gw_pid|http://127.0.0.1:$gw_port/session/x|-H|Cookie: $session_cookie"
  "bearer+policy+rate-limit|$gw_pid|http://127.0.0.1:$gw_port/guarded/x|-H|Authorization: Bearer $token"
)
# CPU time the proxy process used (user + system), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

to_ms() { # "1.23ms" | "456.00us" | "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

failed=0
# One wrk run of a case; sets rps, p50, p99 (ms) and cpu_us (proxy CPU time per request).
measure() { # entry
  local fields name pid url extra before after total bad
  IFS='|' read -r -a fields <<<"$1"
  name="${fields[0]}"; pid="${fields[1]}"; url="${fields[2]}"; extra=("${fields[@]:3}")
  [ "${#extra[@]}" -eq 1 ] && [ -z "${extra[0]}" ] && extra=()
  before=$(cpu_ticks "$pid")
  out=$("${pin_load[@]}" wrk --latency -t1 -c"$connections" -d"${duration}s" "${extra[@]}" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  total=$(awk '/requests in/ { print $1 }' <<<"$out")
  cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print 0 }')
  bad=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
  if [ -z "$rps" ] || awk -v r="$rps" 'BEGIN { exit !(r <= 0) }' || [ -n "$bad" ]; then
    echo "bench: case $name failed (non-2xx: ${bad:-0})" >&2
    echo "$out" >&2
    failed=1
  fi
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Each case runs right after a bare-proxy run, $rounds times; ratios compare neighbours,
# so drift of the machine over the run cancels out. Figures are medians.
[ "$smoke" -eq 1 ] && rounds=1
printf '\n%-26s %10s %8s %8s %7s %12s %9s\n' case "req/s" "p50 ms" "p99 ms" "ratio" "CPU us/req" "CPU ratio"
bare_entry="${CASES[0]}"
declare -A bare_rps_all=() bare_cpu_all=()
for entry in "${CASES[@]:1}"; do
  name="${entry%%|*}"
  r_rps=(); r_p50=(); r_p99=(); r_cpu=(); r_ratio=(); r_cpu_ratio=()
  for _ in $(seq 1 "$rounds"); do
    if [ "$smoke" -eq 0 ]; then
      IFS='|' read -r -a warm <<<"$entry"
      "${pin_load[@]}" wrk -t1 -c"$connections" -d1s "${warm[@]:3}" "${warm[2]}" >/dev/null 2>&1 || true
    fi
    measure "$bare_entry"; b_rps=$rps; b_cpu=$cpu_us
    bare_rps_all[$name]+="$rps "; bare_cpu_all[$name]+="$cpu_us "
    measure "$entry"
    r_rps+=("$rps"); r_p50+=("$p50"); r_p99+=("$p99"); r_cpu+=("$cpu_us")
    r_ratio+=("$(awk -v a="$rps" -v b="$b_rps" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }')")
    r_cpu_ratio+=("$(awk -v a="$cpu_us" -v b="$b_cpu" 'BEGIN { if (a > 0) printf "%.3f", b / a; else print 0 }')")
  done
  printf '%-26s %10s %8s %8s %7.2f %12s %9.2f\n' "$name" \
    "$(echo "${r_rps[*]}" | median)" "$(echo "${r_p50[*]}" | median)" "$(echo "${r_p99[*]}" | median)" \
    "$(echo "${r_ratio[*]}" | median)" "$(echo "${r_cpu[*]}" | median)" "$(echo "${r_cpu_ratio[*]}" | median)"
done
all_bare_rps=$(printf '%s' "${bare_rps_all[@]}" | median)
all_bare_cpu=$(printf '%s' "${bare_cpu_all[@]}" | median)
printf '%-26s %10s %8s %8s %7s %12s %9s\n' "bare-pingora" "$all_bare_rps" "-" "-" "1.00" "$all_bare_cpu" "1.00"
rss=$(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$gw_pid/status")
echo
echo "gatehouse RSS after the run: $rss"

# Memory: a gateway of its own logs in $logins browsers through the stub provider, each with
# a Keycloak-shaped ID token and a refresh token; its RSS is read idle, with every session
# stored, and after each session has served one request (its identity built and cached).
logins=100000
[ "$smoke" -eq 1 ] && logins=2000
mem_port=$(port); mem_admin=$(port)
sed -e "s/127.0.0.1:$gw_port/127.0.0.1:$mem_port/g" -e "s/127.0.0.1:$admin_port/127.0.0.1:$mem_admin/" \
  "$work/gateway.toml" >"$work/memory.toml"
cat >>"$work/memory.toml" <<TOML
[reserved_limit]
limit = "1000000/second"
TOML
"${pin_proxy[@]}" "$target/release/gatehouse" run -c "$work/memory.toml" --upgrade-sock "$work/memory.sock" >"$work/memory.log" 2>&1 & mem_pid=$!; pids+=($mem_pid)
wait_http "http://127.0.0.1:$mem_admin/readyz"
rss_mb() { awk '/^VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status"; }
idle_rss=$(rss_mb "$mem_pid")
"${pin_load[@]}" "$target/release/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$mem_port" "$logins" || failed=1
stored_rss=$(rss_mb "$mem_pid")
"${pin_load[@]}" "$target/release/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$mem_port" --use || failed=1
used_rss=$(rss_mb "$mem_pid")
sleep 6 # the supervisor counts sessions every 5 s
active=$(curl -fsS "http://127.0.0.1:$mem_admin/metrics" | awk '$1 == "gatehouse_sessions_active" { print $2 }')
echo "gatehouse RSS with $logins sessions logged in (memory store): idle $idle_rss, all stored $stored_rss, all used once $used_rss (gatehouse_sessions_active ${active:-?})"
if [ "$smoke" -eq 1 ]; then
  "$target/release/examples/session_memory" 10000
else
  "$target/release/examples/session_memory" 100000
  "$target/release/examples/session_memory" 100000 --used
fi
echo "ratio: req/s against the bare proxy; CPU ratio: the bare proxy's CPU time per request"
echo "divided by this case's (1.00 = as cheap as doing nothing; higher is better)"
echo "(1 proxy thread each${pin_proxy:+, pinned to CPU 1 (wrk and upstream on CPU 0)}; wrk -t1 -c$connections -d${duration}s x $rounds rounds, medians; loopback; $(nproc) cores)"
exit "$failed"
