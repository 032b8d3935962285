#!/usr/bin/env bash
# Load benchmark: gatehouse against a bare Pingora passthrough (the ceiling) and against the
# peer, Apache httpd 2.4 + mod_auth_openidc as an OAuth 2.0 resource server validating the
# same RS256 tokens with the same key, all in front of the same upstream, under the same load.
# Loopback only; every run is bounded by --duration.
#   bench/run.sh [--smoke] [--duration S] [--connections C] [--rounds N]
#                [--threads N|default] [--rate R] [--no-peer] [--no-latency] [--no-memory]
#                [--memory-only] [--pgo]
# Prints per case: requests/s, p50/p99, the ratio to the bare proxy (sent the same request)
# and to the peer, the proxies' CPU time per request; then p50/p99/p99.9 latency at a fixed
# request rate; then the gateway's memory with 100,000 sessions.
# --threads N: gatehouse's `threads` (default 1); the proxies run pinned to CPU 1, wrk and the
#   upstream to CPU 0. --threads default: `threads` left at its default (one per core), the
#   bare proxy with as many, nothing pinned: as a user runs it.
# --rate R: the fixed rate of the latency runs (default: half the bare proxy's req/s here).
# --pgo: gatehouse and the bare proxy both from the profile-guided build (scripts/build-pgo.sh,
#   run first unless its binaries are built from these sources); without it, the plain
#   release build.
# --smoke: 2 s per case, one round, no speed assertion; fails only if a case served anything
#   but 2xx. The peer runs too, or is skipped with one line saying why.
# To add a case: add a route to the config below and a line to the CASES table.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

duration=5
rounds=3
connections=32
smoke=0
threads=1
rate=""
peer=1
latency=1
memory=1
memory_only=0
pgo=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1; duration=2; connections=8 ;;
    --duration) duration="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --no-peer) peer=0 ;;
    --no-latency) latency=0 ;;
    --no-memory) memory=0 ;;
    --memory-only) memory_only=1; peer=0; latency=0 ;;
    --pgo) pgo=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$smoke" -eq 1 ] && rounds=1
if [ "$threads" != default ] && ! [ "$threads" -ge 1 ] 2>/dev/null; then
  echo "bench: --threads takes a number or 'default'" >&2; exit 2
fi

command -v wrk >/dev/null || { echo "bench: wrk is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
if [ "$pgo" -eq 1 ]; then
  bin="$target/pgo/release"
  built_from=$(cat "$target/pgo/STAMP" 2>/dev/null || true)
  if [ ! -x "$bin/gatehouse" ] || [ "$built_from" != "$(build_inputs_stamp)" ]; then
    echo "== building profile-guided binaries (scripts/build-pgo.sh)"
    bash scripts/build-pgo.sh >&2
  fi
  build_note="profile-guided build of $(cat "$target/pgo/COMMIT")"
else
  bin="$target/release"
  echo "== building release binaries"
  bash scripts/build.sh >&2
  build_note="release build"
fi

bench_start

# Pinned (the default): the proxies get a core of their own and wrk and the upstream share
# another, so the figures measure the proxy, not the scheduler.
pin_proxy=(); pin_load=()
if [ "$threads" = default ]; then
  gw_threads=""; bare_threads=$(nproc)
  layout="gatehouse threads at the default ($(nproc)), bare proxy $(nproc) threads, nothing pinned"
else
  gw_threads="threads = $threads"; bare_threads=$threads
  layout="$threads proxy thread(s) each"
  if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_proxy=(taskset -c 1); pin_load=(taskset -c 0)
    layout="$layout, pinned to CPU 1 (wrk and upstream on CPU 0)"
  fi
fi

wait_http() { # url [quiet]
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  [ -n "${2:-}" ] || echo "bench: $1 did not come up" >&2
  return 1
}

up_port=$(port); bare_port=$(port); gw_port=$(port); admin_port=$(port); peer_port=$(port)
issuer="http://127.0.0.1:$up_port"
"$bin/examples/bench_tokens" "$work" "$issuer" 1000
token=$(head -n 1 "$work/tokens.txt")
api_key="bench-api-key-0123456789"
api_hash=$(printf '%s' "$api_key" | "$bin/gatehouse" apikey hash)

"${pin_load[@]}" "$bin/examples/bench_upstream" "127.0.0.1:$up_port" "$work/jwks.json" & pids+=($!)
wait_http "http://127.0.0.1:$up_port/"
"${pin_proxy[@]}" "$bin/examples/bare_proxy" "127.0.0.1:$bare_port" "127.0.0.1:$up_port" "$bare_threads" >"$work/bare.log" 2>&1 & bare_pid=$!; pids+=($bare_pid)

bench_config "$gw_port" "$admin_port" "$up_port" "$gw_threads" "$work" "$issuer" "$api_hash"
"${pin_proxy[@]}" "$bin/gatehouse" run -c "$work/gateway.toml" --upgrade-sock "$work/upgrade.sock" >"$work/gateway.log" 2>&1 & gw_pid=$!; pids+=($gw_pid)
wait_http "http://127.0.0.1:$admin_port/readyz"
wait_http "http://127.0.0.1:$bare_port/"
session_cookie=$("$bin/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$gw_port")

# The peer: Apache httpd + mod_auth_openidc (Debian packages apache2 and
# libapache2-mod-auth-openidc), our own ServerRoot in the work dir, in the foreground, as a
# process of this script. One child process (event MPM) with one worker thread per wrk
# connection, since an Apache worker holds its connection for the whole proxied request;
# its CPU is bounded like gatehouse's: the same core when pinned. The key comes from a file
# (mod_auth_openidc fetches a JWKS only over https); `iss`, `aud` and `exp` are checked.
peer_pid=""
peer_skip=""
start_peer() {
  local apache mod dir
  apache=$(command -v apache2 || echo /usr/sbin/apache2)
  mod=/usr/lib/apache2/modules/mod_auth_openidc.so
  if [ ! -x "$apache" ] || [ ! -f "$mod" ]; then
    peer_skip="apache2 or mod_auth_openidc is not installed (bash scripts/setup.sh installs them)"
    return
  fi
  dir="$work/apache"
  mkdir -p "$dir"
  # Apache started as root hands its workers to `nobody`, which must reach the key file.
  chmod 755 "$work" "$dir"; chmod 644 "$work/public.pem"
  local user=""
  [ "$(id -u)" -eq 0 ] && user=$'User nobody\nGroup nogroup'
  local kid
  kid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["keys"][0]["kid"])' "$work/jwks.json")
  cat >"$dir/httpd.conf" <<CONF
ServerRoot "$dir"
DefaultRuntimeDir "$dir"
PidFile "$dir/httpd.pid"
ServerName 127.0.0.1
Listen 127.0.0.1:$peer_port
ErrorLog "$dir/error.log"
LogLevel warn
$user
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so
LoadModule proxy_module /usr/lib/apache2/modules/mod_proxy.so
LoadModule proxy_http_module /usr/lib/apache2/modules/mod_proxy_http.so
LoadModule auth_openidc_module $mod
StartServers 1
ServerLimit 1
ThreadLimit $connections
ThreadsPerChild $connections
MaxRequestWorkers $connections
MinSpareThreads 1
MaxSpareThreads $connections
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
OIDCCryptoPassphrase bench-not-secret
OIDCOAuthVerifyCertFiles $kid#$work/public.pem
OIDCOAuthRemoteUserClaim sub
ProxyPass / http://127.0.0.1:$up_port/
<Location /bearer>
  AuthType oauth20
  <RequireAll>
    Require claim iss:$issuer
    Require claim aud:bench-api
  </RequireAll>
</Location>
CONF
  "${pin_proxy[@]}" "$apache" -d "$dir" -f "$dir/httpd.conf" -DFOREGROUND >"$dir/stdout.log" 2>&1 & peer_pid=$!; pids+=($peer_pid)
  if ! wait_http "http://127.0.0.1:$peer_port/open/x" quiet; then
    peer_skip="Apache did not start: $(tail -n 2 "$dir/error.log" "$dir/stdout.log" 2>/dev/null | tr '\n' ' ')"
    kill "$peer_pid" 2>/dev/null || true; peer_pid=""
    return
  fi
  if ! curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$peer_port/bearer/x"; then
    peer_skip="Apache refused a valid token: $(tail -n 2 "$dir/error.log" | tr '\n' ' ')"
    kill "$peer_pid" 2>/dev/null || true; peer_pid=""
  fi
}
if [ "$peer" -eq 1 ]; then
  start_peer
  if [ -n "$peer_skip" ]; then echo "bench: peer skipped: $peer_skip"; fi
else
  peer_skip="--no-peer"
fi

# wrk scripts format every request before the run (in `init`, which wrk runs before it starts
# the clock): wrk then spent 4-7 us of user time per request (that formatting counted in),
# against 6-9 us formatting each as it was sent and 2-3 us for a fixed -H header; with threads
# at the default, wrk's time comes out of the proxies' shared cores. Formatting takes about
# 30 us and 2 KB of wrk's memory per request: 10 s and 700 MB for 340,000 (a quiet machine's
# bearer-unique budget for 5 s).
cycle_lua() { # token-file path count script: the file's first `count` tokens, in turn
  cat >"$4" <<LUA
function init(args)
  reqs = {}
  for line in io.lines("$1") do
    reqs[#reqs + 1] = wrk.format("GET", "$2", { ["Authorization"] = "Bearer " .. line })
    if #reqs >= $3 then break end
  end
  if #reqs == 0 then error("no tokens in $1") end
  i = 0
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
LUA
}
cycle_lua "$work/tokens.txt" /bearer/x 1000 "$work/rotate.lua"

# bearer-unique: every request carries a token its target never saw. One supply of tokens
# (unique.txt, signed as needed); each target reads it from its own offset, which only moves
# by the tokens it was sent, so no target sees a token twice (the peer and gatehouse are
# different processes and may both use a token). A run that reached the end of the supply
# sends "exhausted" tokens, which fail, so the case is reported failed, never flattered.
unique_have=0
bare_pool=20000
declare -A unique_at=() top_rps=()
ensure_unique() { # lines needed in unique.txt
  local more=$(( $1 - unique_have ))
  [ "$more" -gt 0 ] || return 0
  [ "$more" -ge 20000 ] || more=20000
  echo "== signing $more more unique tokens" >&2
  "$bin/examples/bench_tokens" "$work" "$issuer" "$more" --unique "$unique_have"
  unique_have=$(( unique_have + more ))
}
# Tokens a run at up to `rate` req/s for `seconds` may use: 1.5x the faster of the target's
# fastest cached-token run so far and the bare proxy's run just before (`b_rps`). The cached
# rate alone is no bound: the peer's first cached run, unwarmed in smoke mode, was slower than
# its first-seen tokens (CI: 3,014 req/s cached, then 9,066 tokens ran out in 2 s).
unique_budget() { # target seconds
  local fastest
  fastest=$(max_of "${top_rps[$1]:-0}" "${b_rps:-30000}")
  awk -v r="$fastest" -v s="$2" -v c="$connections" 'BEGIN { printf "%d", r * 1.5 * s + c + 16 }'
}
unique_lua() { # target path count -> script path
  local from=${unique_at[$1]:-0}
  cat >"$work/unique.lua" <<LUA
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  reqs = {}
  local n = 0
  for line in io.lines("$work/unique.txt") do
    n = n + 1
    if n > $from then
      reqs[#reqs + 1] = wrk.format("GET", "$2", { ["Authorization"] = "Bearer " .. line })
      if #reqs >= $3 then break end
    end
  end
  spent = wrk.format("GET", "$2", { ["Authorization"] = "Bearer exhausted" })
  i = 0
end
function request()
  i = i + 1
  return reqs[i] or spent
end
function done(summary, latency, requests)
  local used = 0
  for _, t in ipairs(threads) do used = used + t:get("i") end
  local f = io.open("$work/unique.used", "w")
  f:write(used)
  f:close()
end
LUA
  echo "$work/unique.lua"
}

# name | gatehouse url | peer url (empty: the peer has no such case) | wrk arguments
# (`unique`: the bearer-unique token walk)
CASES=(
  "none|http://127.0.0.1:$gw_port/open/x|http://127.0.0.1:$peer_port/open/x|"
  "none+rate-limit|http://127.0.0.1:$gw_port/limited/x||"
  "bearer-repeated|http://127.0.0.1:$gw_port/bearer/x|http://127.0.0.1:$peer_port/bearer/x|-H|Authorization: Bearer $token"
  "bearer-1000-rotating|http://127.0.0.1:$gw_port/bearer/x|http://127.0.0.1:$peer_port/bearer/x|-s|$work/rotate.lua"
  "bearer-unique|http://127.0.0.1:$gw_port/bearer/x|http://127.0.0.1:$peer_port/bearer/x|unique"
  "api-key|http://127.0.0.1:$gw_port/keys/x||-H|X-Api-Key: $api_key"
  "session|http://127.0.0.1:$gw_port/session/x||-H|Cookie: $session_cookie"
  "bearer+policy+rate-limit|http://127.0.0.1:$gw_port/guarded/x||-H|Authorization: Bearer $token"
)
# A case's wrk arguments with bearer-unique's token walk replaced by the repeated token, the
# same size, for runs that must spend no unique tokens: warm-ups, and the bare proxy's
# latency runs (it reads no token). Sets no_unique.
without_unique() { # wrk-arguments...
  no_unique=("$@")
  if [ "${1:-}" = unique ]; then
    no_unique=(-H "Authorization: Bearer $token")
  fi
}
# The bare proxy is sent the very request each case sends (same path, same headers), as
# bench/callgrind.sh does: the ceiling for that request, since any proxy reads and forwards a
# token's kilobyte. Sets bare_req. (The throughput runs give it bearer-unique's tokens too.)
bare_request() { # case-url wrk-arguments...
  local url=$1
  shift
  without_unique "$@"
  bare_req=("http://127.0.0.1:$bare_port/${url#http://*/}" "${no_unique[@]}")
}
# CPU time a process and its children used (user + system), in clock ticks.
cpu_ticks() {
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

to_ms() { # "1.23ms" | "456.00us" | "1.02s" -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

failed=0
# One wrk run; sets rps, p50, p99 (ms) and cpu_us (the target's CPU time per request).
measure() { # name pid url wrk-arguments...
  local name=$1 pid=$2 url=$3 before after total bad budget path
  shift 3
  local extra=("$@")
  [ "${#extra[@]}" -eq 1 ] && [ -z "${extra[0]}" ] && extra=()
  local unique=0
  if [ "${extra[0]:-}" = unique ]; then
    unique=1
    budget=$(unique_budget "$pid" "$duration")
    ensure_unique $(( ${unique_at[$pid]:-0} + budget ))
    path="/${url#http://*/}"
    extra=(-s "$(unique_lua "$pid" "$path" "$budget")")
    rm -f "$work/unique.used"
  fi
  before=$(cpu_ticks "$pid")
  out=$("${pin_load[@]}" wrk --latency -t1 -c"$connections" -d"${duration}s" "${extra[@]}" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  total=$(awk '/requests in/ { print $1 }' <<<"$out")
  cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="${total:-0}" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print 0 }')
  bad=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' <<<"$out")
  if [ "$unique" -eq 1 ]; then
    local used
    used=$(cat "$work/unique.used" 2>/dev/null || echo "$budget")
    unique_at[$pid]=$(( ${unique_at[$pid]:-0} + used ))
    [ "$used" -le "$budget" ] || echo "bench: $name ran out of unique tokens ($used wanted, $budget ready)" >&2
  fi
  if [ -z "$rps" ] || awk -v r="$rps" 'BEGIN { exit !(r <= 0) }' || [ -n "$bad" ]; then
    echo "bench: case $name failed (non-2xx: ${bad:-0})" >&2
    echo "$out" >&2
    failed=1
  fi
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }'; }
max_of() { awk -v a="${1:-0}" -v b="$2" 'BEGIN { print (a > b ? a : b) }'; }

if [ "$memory_only" -eq 0 ]; then
# Each case runs right after a bare-proxy run of the same request (and the peer right after
# it), $rounds times; ratios compare neighbours, so drift of the machine over the run cancels
# out. Medians.
printf '\n%-26s %9s %7s %7s %6s %9s %6s %9s %6s | %9s %7s %9s\n' case "req/s" "p50 ms" "p99 ms" "ratio" "CPU us/rq" "CPU r" "bare rq/s" "open r" "peer rq/s" "vs peer" "peer CPU"
declare -A bare_rps_all=() bare_cpu_all=()
# The first case (none, /open/x without credentials) runs first; its bare runs are the
# reference of the "open r" column and of the summary's bare row.
open_case=${CASES[0]%%|*}
for entry in "${CASES[@]}"; do
  IFS='|' read -r -a fields <<<"$entry"
  name="${fields[0]}"; url="${fields[1]}"; purl="${fields[2]}"; args=("${fields[@]:3}")
  [ -n "$peer_pid" ] || purl=""
  r_rps=(); r_p50=(); r_p99=(); r_cpu=(); r_ratio=(); r_cpu_ratio=(); r_peer=(); r_vs_peer=(); r_peer_cpu=()
  for _ in $(seq 1 "$rounds"); do
    if [ "$smoke" -eq 0 ]; then
      # Warm-up; the unique case warms up on the repeated token.
      without_unique "${args[@]}"
      "${pin_load[@]}" wrk -t1 -c"$connections" -d1s "${no_unique[@]}" "$url" >/dev/null 2>&1 || true
      [ -z "$purl" ] || "${pin_load[@]}" wrk -t1 -c"$connections" -d1s "${no_unique[@]}" "$purl" >/dev/null 2>&1 || true
    fi
    bare_request "$url" "${args[@]}"
    if [ "${args[0]:-}" = unique ]; then
      # Tokens of the same supply by the same kind of script, so wrk does the same work per
      # request; the first $bare_pool in turn, since the bare proxy reads no token.
      ensure_unique "$bare_pool"
      cycle_lua "$work/unique.txt" "/${url#http://*/}" "$bare_pool" "$work/bare-unique.lua"
      bare_req=("${bare_req[0]}" -s "$work/bare-unique.lua")
    fi
    measure bare-pingora "$bare_pid" "${bare_req[@]}"; b_rps=$rps; b_cpu=$cpu_us
    bare_rps_all[$name]+="$rps "; bare_cpu_all[$name]+="$cpu_us "
    measure "$name" "$gw_pid" "$url" "${args[@]}"
    r_rps+=("$rps"); r_p50+=("$p50"); r_p99+=("$p99"); r_cpu+=("$cpu_us")
    r_ratio+=("$(ratio "$rps" "$b_rps")"); r_cpu_ratio+=("$(ratio "$b_cpu" "$cpu_us")")
    [ "$name" = bearer-repeated ] && top_rps[$gw_pid]=$(max_of "${top_rps[$gw_pid]:-}" "$rps")
    if [ -n "$purl" ]; then
      g_rps=$rps
      measure "peer:$name" "$peer_pid" "$purl" "${args[@]}"
      r_peer+=("$rps"); r_vs_peer+=("$(ratio "$g_rps" "$rps")"); r_peer_cpu+=("$cpu_us")
      [ "$name" = bearer-repeated ] && top_rps[$peer_pid]=$(max_of "${top_rps[$peer_pid]:-}" "$rps")
    fi
  done
  peer_cols=("-" "-" "-")
  if [ -n "$purl" ]; then
    peer_cols=("$(echo "${r_peer[*]}" | median)" "$(printf '%.2f' "$(echo "${r_vs_peer[*]}" | median)")" "$(echo "${r_peer_cpu[*]}" | median)")
  fi
  g_median=$(echo "${r_rps[*]}" | median)
  open_rps=$(echo "${bare_rps_all[$open_case]}" | median)
  printf '%-26s %9s %7s %7s %6.2f %9s %6.2f %9s %6.2f | %9s %7s %9s\n' "$name" \
    "$g_median" "$(echo "${r_p50[*]}" | median)" "$(echo "${r_p99[*]}" | median)" \
    "$(echo "${r_ratio[*]}" | median)" "$(echo "${r_cpu[*]}" | median)" "$(echo "${r_cpu_ratio[*]}" | median)" \
    "$(echo "${bare_rps_all[$name]}" | median)" "$(ratio "$g_median" "$open_rps")" "${peer_cols[@]}"
done
open_cpu=$(echo "${bare_cpu_all[$open_case]}" | median)
printf '%-26s %9s %7s %7s %6s %9s %6s %9s %6s |\n' "bare-pingora /open/x" "$open_rps" "-" "-" "1.00" "$open_cpu" "1.00" "-" "1.00"
[ -z "$peer_skip" ] || echo "(peer: skipped: $peer_skip)"
echo "ratio: req/s against the bare proxy sent the same request (path and headers; for"
echo "bearer-unique tokens of the same supply) in the same round, median of rounds; CPU r:"
echo "its CPU time per request divided by this case's (1.00 = as cheap as doing nothing); bare rq/s:"
echo "those bare runs' median; open r: this case's median req/s divided by the bare proxy's on"
echo "/open/x without credentials (the first case's bare runs); vs peer: gatehouse's req/s divided"
echo "by the peer's in the same round; CPU us/rq: the proxy process's CPU time per request."
echo "($build_note; $layout; peer: Apache, 1 process x $connections threads, on the same CPUs as gatehouse;"
echo " wrk -t1 -c$connections -d${duration}s x $rounds rounds, medians; loopback; $(nproc) cores)"
rss=$(awk '/^VmRSS/ { print $2 " " $3 }' "/proc/$gw_pid/status")
echo "gatehouse RSS after the run: $rss"

# Latency at a fixed request rate (half the bare proxy's capacity unless --rate): each case
# right after the bare proxy, p50/p99/p99.9 and what the case adds to the bare proxy's.
if [ "$latency" -eq 1 ]; then
  [ -n "$rate" ] || rate=$(awk -v r="$open_rps" 'BEGIN { printf "%d", r / 2 }')
  lat_s=$duration
  # Sets l50 l99 l999 (ms) and l_rate; $4.. are bench_rate arguments.
  paced() { # pid url name args...
    local pid=$1 url=$2 name=$3 out used
    shift 3
    local extra=("$@")
    [ "${#extra[@]}" -eq 1 ] && [ -z "${extra[0]}" ] && extra=()
    case "${extra[0]:-}" in
      unique)
        local budget
        budget=$(awk -v r="$rate" -v s="$lat_s" -v c="$connections" 'BEGIN { printf "%d", r * s + c + 16 }')
        ensure_unique $(( ${unique_at[$pid]:-0} + budget ))
        extra=(--tokens "$work/unique.txt" "${unique_at[$pid]:-0}") ;;
      -s) extra=(--rotate "$work/tokens.txt") ;;
    esac
    out=$("${pin_load[@]}" "$bin/examples/bench_rate" "$url" "$rate" "$lat_s" "$connections" "${extra[@]}")
    field() { tr ' ' '\n' <<<"$out" | awk -F= -v k="$1" '$1 == k { print $2 }'; }
    l50=$(awk -v u="$(field p50_us)" 'BEGIN { printf "%.3f", u / 1000 }')
    l99=$(awk -v u="$(field p99_us)" 'BEGIN { printf "%.3f", u / 1000 }')
    l999=$(awk -v u="$(field p999_us)" 'BEGIN { printf "%.3f", u / 1000 }')
    l_rate=$(field rate)
    if [ "${extra[0]:-}" = --tokens ]; then
      used=$(field used)
      unique_at[$pid]=$(( ${unique_at[$pid]:-0} + used ))
    fi
    # Timeouts of a target that cannot keep up show as the rate it reached, not as a failure.
    if [ "$(field ok)" = 0 ] || [ "$(field non2xx)" != 0 ]; then
      echo "bench: latency run of $name failed: $out" >&2
      failed=1
    fi
    if awk -v a="$l_rate" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }'; then
      l999="$l999 (reached $l_rate/s)"
    fi
  }
  echo
  echo "Latency at a fixed rate of $rate req/s (bench_rate: $connections connections, ${lat_s}s per run, latency from when each request was due):"
  printf '%-26s %8s %8s %9s | %-22s | %s\n' case "p50 ms" "p99 ms" "p99.9 ms" "added p50/p99/p99.9" "peer p50/p99/p99.9 ms"
  for entry in "${CASES[@]}"; do
    IFS='|' read -r -a fields <<<"$entry"
    name="${fields[0]}"; url="${fields[1]}"; purl="${fields[2]}"; args=("${fields[@]:3}")
    [ -n "$peer_pid" ] || purl=""
    # bench_rate takes headers as -H "Name: value", as wrk does.
    bare_request "$url" "${args[@]}"
    paced "$bare_pid" "${bare_req[0]}" bare-pingora "${bare_req[@]:1}"; b50=$l50; b99=$l99; b999=${l999%% *}
    paced "$gw_pid" "$url" "$name" "${args[@]}"
    added=$(awk -v a="$l50" -v b="$b50" -v c="$l99" -v d="$b99" -v e="${l999%% *}" -v f="$b999" 'BEGIN { printf "%+.3f/%+.3f/%+.3f", a - b, c - d, e - f }')
    peer_lat="-"
    if [ -n "$purl" ]; then
      g50=$l50; g99=$l99; g999=$l999
      paced "$peer_pid" "$purl" "peer:$name" "${args[@]}"
      peer_lat="$l50/$l99/$l999"
      l50=$g50; l99=$g99; l999=$g999
    fi
    printf '%-26s %8s %8s %9s | %-22s | %s\n' "$name" "$l50" "$l99" "$l999" "$added" "$peer_lat"
  done
  echo "(bare-pingora in the same runs: the added figures subtract the bare run just before each case;"
  echo " a value marked 'reached' is a case that could not keep up with the rate)"
fi

fi # --memory-only
[ "$memory" -eq 1 ] || exit "$failed"
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
"${pin_proxy[@]}" "$bin/gatehouse" run -c "$work/memory.toml" --upgrade-sock "$work/memory.sock" >"$work/memory.log" 2>&1 & mem_pid=$!; pids+=($mem_pid)
wait_http "http://127.0.0.1:$mem_admin/readyz"
rss_mb() { awk '/^VmRSS/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status"; }
idle_rss=$(rss_mb "$mem_pid")
"${pin_load[@]}" "$bin/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$mem_port" "$logins" || failed=1
stored_rss=$(rss_mb "$mem_pid")
"${pin_load[@]}" "$bin/examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$mem_port" --use || failed=1
used_rss=$(rss_mb "$mem_pid")
sleep 6 # the supervisor counts sessions every 5 s
active=$(curl -fsS "http://127.0.0.1:$mem_admin/metrics" | awk '$1 == "gatehouse_sessions_active" { print $2 }')
echo
echo "gatehouse RSS with $logins sessions logged in (memory store): idle $idle_rss, all stored $stored_rss, all used once $used_rss (gatehouse_sessions_active ${active:-?})"
if [ "$smoke" -eq 1 ]; then
  "$bin/examples/session_memory" 10000
else
  "$bin/examples/session_memory" 100000
  "$bin/examples/session_memory" 100000 --used
fi
exit "$failed"
