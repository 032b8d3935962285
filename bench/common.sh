# What the benchmarks share (bench/run.sh, bench/callgrind.sh): a work directory whose
# processes stop when the script exits, free loopback ports, and the gateway config they
# measure.

# Sets $work (a new temporary directory) and $pids (processes to stop); on exit, stops every
# process in $pids and removes $work.
bench_start() {
  work="$(mktemp -d)"
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}

# A free TCP port on loopback.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The gateway config every benchmark measures, with the policy of its guarded route.
#   bench_config GW_PORT ADMIN_PORT UP_PORT THREADS_LINE WORK ISSUER API_KEY_HASH
# THREADS_LINE: `threads = N`, or empty for the default. Writes WORK/gateway.toml and
# WORK/policy.toml.
bench_config() {
  cat >"$5/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$1"]
public_url = "http://127.0.0.1:$1"
$4
[admin]
listen = "127.0.0.1:$2"
[log]
level = "warn"
access_log = false
audit = false
[upstream.app]
servers = ["127.0.0.1:$3"]
[[bearer]]
issuer = "$6"
audiences = ["bench-api"]
jwks_uri = "$6/jwks"
[[idp]]
name = "bench"
issuer = "$6"
client_id = "bench"
client_secret = "bench-client-secret"
[[api_key]]
name = "bench"
hash = "$7"
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
  cat >"$5/policy.toml" <<TOML
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
}

# The sources of the release binaries: the crates, the manifest and lock, and the files the
# binary includes.
build_sources=(src alloc examples Cargo.toml Cargo.lock gateway.toml policies)
# What a profile-guided build is made from: the toolchain, RUSTFLAGS, and the content of every
# file the build or its training reads (sources, manifest and lock, included files, the build
# and benchmark scripts), committed, changed or new. scripts/build-pgo.sh records it beside its
# build; bench/run.sh --pgo rebuilds when it differs.
build_inputs_stamp() {
  local paths=("${build_sources[@]}" scripts/build.sh scripts/build-pgo.sh bench/run.sh
    bench/common.sh)
  {
    rustc -vV
    printf 'RUSTFLAGS=%s\n' "${RUSTFLAGS:-}"
    git ls-files -co --exclude-standard -z -- "${paths[@]}" | xargs -0 -r sha256sum 2>/dev/null || true
  } | sha256sum | cut -c1-16
}
