#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable to ~0.1% on a
# noisy machine, unlike requests per second. For HAProxy (one thread, the shipped
# configuration with logging off and a 200 answered by HAProxy itself, as loadbench
# runs it) and for keyward itself, through real HAProxy, on loopback.
#
#   cargo build --release -p keyward -p keyward-tests && bash tests/callgrind.sh
#
# Each figure is (instructions after 3000 requests - after 1000) / 2000, so start-up
# cancels out. User-space instructions only: syscalls and the kernel are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
HAPROXY=${HAPROXY:-haproxy}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.2; done; echo "no answer from $1" >&2; exit 1; }

# The configuration loadbench measures: no logs, HAProxy answers 200 for the app.
python3 - "$dir" <<'EOF'
import sys
d = sys.argv[1]
s = open('haproxy/haproxy.cfg').read()
s = s.replace('    option httplog\n', '').replace('    log global\n', '    no log\n')
s = s.replace('    server app "${KEYWARD_UPSTREAM-127.0.0.1:8000}"',
              '    http-request return status 200 content-type text/plain string "ok\\n"')
s = s.replace('global\n', 'global\n    nbthread 1\n', 1)
open(d + '/haproxy.cfg', 'w').write(s)
t = open('haproxy/keyward-spoe.conf').read().replace('    log global\n    use-backend', '    use-backend')
open(d + '/spoe.conf', 'w').write(t)
open(d + '/plain.cfg', 'w').write(
    'global\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n'
    '    timeout server 30s\nfrontend plain\n    bind "${KEYWARD_HTTP_BIND}"\n    default_backend app\n'
    'backend app\n    http-request return status 200 content-type text/plain string "ok\\n"\n')
EOF

# keyward with a key ring and an "authenticated" policy; a session token for the hits.
kw_spoa=$(port); kw_ops=$(port); kw_portal=$(port)
cat > "$dir/policy.toml" <<EOF
[[rule]]
name = "headers only"
paths = ["/headers"]
access = "authenticated"
assertion = false

[[rule]]
name = "all"
access = "authenticated"
EOF
cat > "$dir/keyward.toml" <<EOF
version = 1
[spoa]
listen = ["127.0.0.1:$kw_spoa"]
[ops]
listen = "127.0.0.1:$kw_ops"
[portal]
listen = "127.0.0.1:$kw_portal"
login_url = "https://auth.test/.keyward/login"
rp_id = "auth.test"
origins = ["https://auth.test"]
[session]
keyring = "$dir/keyring.toml"
[assertion]
issuer = "https://auth.test"
[policy]
file = "$dir/policy.toml"
[store]
url = "sqlite://$dir/keyward.db"
[audit]
file = "$dir/audit.jsonl"
[log]
level = "warn"
EOF
$bin/keyward keys generate --config "$dir/keyward.toml" >/dev/null
token=$($bin/keyward token mint --config "$dir/keyward.toml" --user bench-user --roles dev,ops \
  --ttl 12h --device bench-device 2>/dev/null)
cookie="cookie: keyward_session=$token"

noop=$(port); ident=$(port)
$bin/test-agent "127.0.0.1:$noop" 400 noop >/dev/null 2>&1 & pids+=($!)
$bin/test-agent "127.0.0.1:$ident" 400 noop-identity >/dev/null 2>&1 & pids+=($!)

# h2load (HTTP/1.1, 10 connections) sends N requests; every answer must be 200.
load() {
  local url=$1 n=$2; shift 2
  h2load --h1 -n "$n" -c 10 "$@" "$url" >"$dir/h2load.out" 2>&1
  grep -q "$n 2xx" "$dir/h2load.out" || { echo "not all 200:" >&2; grep -E "status codes" "$dir/h2load.out" >&2; exit 1; }
}

instructions() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }

# HAProxy under callgrind, config $1, agent address $2, extra h2load args after.
haproxy_cost() {
  local cfg=$1 spoa=$2; shift 2
  local counts=()
  for n in 1000 3000; do
    local p; p=$(port)
    KEYWARD_HTTP_BIND="127.0.0.1:$p" KEYWARD_HAPROXY_API="$dir/api-$p.sock" KEYWARD_SPOE_CONF="$dir/spoe.conf" KEYWARD_SPOA="$spoa" \
      valgrind --tool=callgrind --callgrind-out-file="$dir/hap.out" "$HAPROXY" -db -f "$cfg" \
      >/dev/null 2>"$dir/valgrind.err" &
    local vp=$!
    wait_http "http://127.0.0.1:$p/"
    load "http://127.0.0.1:$p${URL_PATH:-/}" "$n" "$@"
    kill -USR1 "$vp"; wait "$vp" 2>/dev/null || true
    counts+=("$(instructions "$dir/hap.out")")
  done
  echo $(( (counts[1] - counts[0]) / 2000 ))
}

# keyward under callgrind, with HAProxy (not instrumented) in front.
keyward_cost() {
  local counts=()
  for n in 1000 3000; do
    valgrind --tool=callgrind --callgrind-out-file="$dir/kw.out" $bin/keyward serve \
      --config "$dir/keyward.toml" >/dev/null 2>"$dir/valgrind.err" &
    local vp=$!
    wait_http "http://127.0.0.1:$kw_ops/readyz"
    local p; p=$(port)
    KEYWARD_HTTP_BIND="127.0.0.1:$p" KEYWARD_HAPROXY_API="$dir/api-$p.sock" KEYWARD_SPOE_CONF="$dir/spoe.conf" KEYWARD_SPOA="127.0.0.1:$kw_spoa" \
      "$HAPROXY" -db -f "$dir/haproxy.cfg" >/dev/null 2>&1 &
    local hp=$!
    wait_http "http://127.0.0.1:$p/"
    load "http://127.0.0.1:$p${URL_PATH:-/}" "$n" -H "$cookie"
    kill "$hp"; wait "$hp" 2>/dev/null || true
    kill -TERM "$vp"; wait "$vp" 2>/dev/null || true
    counts+=("$(instructions "$dir/kw.out")")
  done
  echo $(( (counts[1] - counts[0]) / 2000 ))
}

# keyward must be up (not instrumented) while HAProxy is measured against it.
$bin/keyward serve --config "$dir/keyward.toml" >/dev/null 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$kw_ops/readyz"

echo "| what | instructions per request |"
echo "|---|---:|"
echo "| HAProxy: 1 plain | $(haproxy_cost "$dir/plain.cfg" "127.0.0.1:1") |"
echo "| HAProxy: 2 no-op agent | $(haproxy_cost "$dir/haproxy.cfg" "127.0.0.1:$noop") |"
echo "| HAProxy: 2b no-op agent + identity vars | $(haproxy_cost "$dir/haproxy.cfg" "127.0.0.1:$ident") |"
echo "| HAProxy: 2c 2b + session cookie | $(haproxy_cost "$dir/haproxy.cfg" "127.0.0.1:$ident" -H "$cookie") |"
echo "| HAProxy: 3 keyward, cache hit | $(haproxy_cost "$dir/haproxy.cfg" "127.0.0.1:$kw_spoa" -H "$cookie") |"
echo "| HAProxy: 3h keyward, cache hit, route without assertion | $(URL_PATH=/headers haproxy_cost "$dir/haproxy.cfg" "127.0.0.1:$kw_spoa" -H "$cookie") |"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
echo "| keyward: 3 cache hit | $(keyward_cost) |"
echo "| keyward: 3h cache hit, route without assertion | $(URL_PATH=/headers keyward_cost) |"
