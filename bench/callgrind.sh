#!/usr/bin/env bash
# Instruction counts per request: each proxy runs under `valgrind --tool=callgrind`, one
# keep-alive client sends a warm-up, then N counted requests; the proxy's instructions
# (every thread of the process) while those N were served, divided by N. Unlike req/s these
# counts do not move with the machine's other load, so a change of 1% is visible.
#   bench/callgrind.sh [--requests N] [--warmup N] [--bin DIR] [--no-build] [--keep DIR]
# --keep DIR: keep each case's callgrind dump as DIR/<case>.out, for callgrind_annotate.
# --bin DIR: measure the binaries in DIR (gatehouse, bare_proxy, bench_*), e.g. a copy of an
# earlier build's target/release with its examples beside it, to compare two builds.
# The cases and the gateway config are those of bench/run.sh. Loopback only; every wait is
# bounded. bearer-unique sends every request a token the gateway never saw (unique.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

requests=3000
warmup=300
bin=""
build=1
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests="$2"; shift ;;
    --warmup) warmup="$2"; shift ;;
    --bin) bin="$2"; build=0; shift ;;
    --no-build) build=0 ;;
    --keep) keep="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in valgrind callgrind_control python3 curl; do
  command -v "$tool" >/dev/null || { echo "callgrind: $tool is missing" >&2; exit 1; }
done
target="${CARGO_TARGET_DIR:-target}"
if [ "$build" -eq 1 ]; then
  echo "== building release binaries" >&2
  bash scripts/build.sh >&2
fi
if [ -z "$bin" ]; then
  bin="$target/release"
  examples="$bin/examples"
else
  examples="$bin"
  [ -d "$bin/examples" ] && examples="$bin/examples"
fi

bench_start

wait_http() { # url; valgrind starts slowly
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "callgrind: $1 did not come up" >&2
  return 1
}

up_port=$(port); bare_port=$(port); gw_port=$(port); admin_port=$(port)
issuer="http://127.0.0.1:$up_port"
"$examples/bench_tokens" "$work" "$issuer" 1
token=$(head -n 1 "$work/tokens.txt")
# bearer-unique: a token no request carried before, for the warm-up and every counted request.
# Twice as many: the bare proxy is measured with never-seen tokens too.
"$examples/bench_tokens" "$work" "$issuer" $((2 * (warmup + requests))) --unique 0 >/dev/null
api_key="bench-api-key-0123456789"
api_hash=$(printf '%s' "$api_key" | "$bin/gatehouse" apikey hash)

"$examples/bench_upstream" "127.0.0.1:$up_port" "$work/jwks.json" & pids+=($!)
wait_http "http://127.0.0.1:$up_port/"

bench_config "$gw_port" "$admin_port" "$up_port" "threads = 1" "$work" "$issuer" "$api_hash"

# One keep-alive connection; every answer must be a 200 from the upstream.
cat >"$work/client.py" <<'PY'
# "@FILE" instead of headers: each request carries the next bearer token of FILE, where
# the previous run stopped (FILE.next), so no token is sent twice.
import http.client, os, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tokens = None
if len(sys.argv) > 4 and sys.argv[4].startswith("@"):
    name = sys.argv[4][1:]
    start = int(open(name + ".next").read()) if os.path.exists(name + ".next") else 0
    tokens = open(name).read().split()[start:]
    if len(tokens) < count:
        sys.exit(f"{name}: {len(tokens)} tokens left, {count} needed")
    open(name + ".next", "w").write(str(start + count))
    headers = {}
else:
    headers = dict(h.split(": ", 1) for h in sys.argv[4:])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(count):
    if tokens is not None:
        headers = {"Authorization": "Bearer " + tokens[i]}
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200 or r.will_close:
        sys.exit(f"request {i} to {path}: status {r.status}, close {r.will_close}")
PY

under_callgrind() { # name args... ; starts it under callgrind with counting off, sets $started
  local name="$1"; shift
  valgrind --tool=callgrind --instr-atstart=no --dump-line=no --compress-strings=no \
    --callgrind-out-file="$work/$name.out" "$@" >"$work/$name.log" 2>&1 &
  started=$!
  pids+=($started)
}

# The proxy's instructions per request for one case: warm-up uncounted, then N counted.
measure() { # case pid port path [header]
  local case="$1" pid="$2" port="$3" path="$4"; shift 4
  python3 "$work/client.py" "$port" "$path" "$warmup" "$@"
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  callgrind_control --zero "$pid" >/dev/null 2>&1
  python3 "$work/client.py" "$port" "$path" "$requests" "$@"
  callgrind_control --dump="case" "$pid" >/dev/null 2>&1
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  local dump
  dump=$(ls -t "$work"/*.out.* | head -n 1)
  awk -v n="$requests" '/^(summary|totals):/ { total = $2 } END { printf "%.0f", total / n }' "$dump"
  if [ -n "$keep" ]; then mkdir -p "$keep"; mv "$dump" "$keep/$case.out"; else rm -f "$dump"; fi
}

under_callgrind bare "$examples/bare_proxy" "127.0.0.1:$bare_port" "127.0.0.1:$up_port" 1
bare_pid=$started
under_callgrind gateway "$bin/gatehouse" run -c "$work/gateway.toml" --upgrade-sock "$work/upgrade.sock"
gw_pid=$started
wait_http "http://127.0.0.1:$bare_port/open/x"
wait_http "http://127.0.0.1:$admin_port/readyz"
session_cookie=$("$examples/bench_login" "$work" "$issuer" "http://127.0.0.1:$gw_port")

# Each case beside the bare proxy serving the very same request (same headers, so the
# same bytes for Pingora to parse and forward): the ratio is what the gateway adds.
bare_open=$(measure bare-pingora "$bare_pid" "$bare_port" /open/x)
row() { # case instructions bare-same-request
  printf '%-26s %14s %14s %8s %8s\n' "$1" "$2" "$3" \
    "$(python3 -c "print(f'{$2/$3:.3f}')")" "$(python3 -c "print(f'{$2/$bare_open:.3f}')")"
}
printf '%-26s %14s %14s %8s %8s\n' case "instr/request" "bare, same req" "ratio" "÷ bare"
row bare-pingora "$bare_open" "$bare_open"
bare_bearer=$(measure bare+bearer "$bare_pid" "$bare_port" /bearer/x "Authorization: Bearer $token")
bare_key=$(measure bare+api-key "$bare_pid" "$bare_port" /keys/x "X-Api-Key: $api_key")
bare_cookie=$(measure bare+cookie "$bare_pid" "$bare_port" /session/x "Cookie: $session_cookie")
bare_unique=$(measure bare+unique "$bare_pid" "$bare_port" /bearer/x "@$work/unique.txt")
row none "$(measure none "$gw_pid" "$gw_port" /open/x)" "$bare_open"
row none+rate-limit "$(measure none+rate-limit "$gw_pid" "$gw_port" /limited/x)" "$bare_open"
row bearer-cached "$(measure bearer-cached "$gw_pid" "$gw_port" /bearer/x "Authorization: Bearer $token")" "$bare_bearer"
row api-key "$(measure api-key "$gw_pid" "$gw_port" /keys/x "X-Api-Key: $api_key")" "$bare_key"
row session "$(measure session "$gw_pid" "$gw_port" /session/x "Cookie: $session_cookie")" "$bare_cookie"
row bearer-unique "$(measure bearer-unique "$gw_pid" "$gw_port" /bearer/x "@$work/unique.txt")" "$bare_unique"
row bearer+policy+rate-limit "$(measure bearer+policy+rate-limit "$gw_pid" "$gw_port" /guarded/x "Authorization: Bearer $token")" "$bare_bearer"
echo "(callgrind; one keep-alive client; $warmup warm-up then $requests counted requests per case; every thread of the proxy process;"
echo " ratio: to the bare proxy serving the same request; ÷ bare: to the bare proxy serving /open/x without credentials)"
