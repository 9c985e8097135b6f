#!/usr/bin/env bash
# tokenyard next to other gateways, on this machine, in one run.
#
# Installs (once, into a scratch directory kept for the next run) pinned
# versions of LiteLLM's proxy (PyPI) and Portkey's gateway (npm), and nginx
# from Debian's packages as a plain reverse-proxy floor; starts each in front
# of the bench's upstream with the same three fake keys, each pinned to the
# gateway core; then runs `cargo bench --bench gateway` in peers mode, which
# hosts the upstream, starts tokenyard too, and measures workloads 1
# (added latency), 2 (throughput at 64 connections) and 4 (429 failover;
# not for nginx, which cannot fail over) through every one of them with the
# same load generator, and prints one table.
#
#   bash benches/peers.sh                 # all of them
#   PEERS="litellm nginx" bash benches/peers.sh
#
# Opt-in (not run by CI): it needs root for apt-get, the package registries
# for the first install, and about ten minutes. Safe to rerun: what is
# installed is reused; everything it starts is stopped on exit, however it
# exits; per-run configs and logs live in a temporary directory that is
# removed. The install cache stays in $TOKENYARD_PEERS_DIR (default
# target/bench-peers); delete it to reinstall. Knobs of the bench itself
# (BENCH_SEQ, BENCH_SECS, ...) pass through the environment.
set -euo pipefail

LITELLM_VERSION=1.82.6
PORTKEY_VERSION=1.15.2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=${TOKENYARD_PEERS_DIR:-$ROOT/target/bench-peers}
PEERS=${PEERS:-litellm portkey nginx}
UPSTREAM_PORT=${UPSTREAM_PORT:-18400}
LITELLM_PORT=18401
PORTKEY_PORT=18402
NGINX_PORT=18403
KEYS=(sk-fake-bench-1-not-a-real-key sk-fake-bench-2-not-a-real-key sk-fake-bench-3-not-a-real-key)

RUN=$(mktemp -d -t tokenyard-peers.XXXXXX)
STARTED=()

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        # Its children too (uvicorn's, nginx's worker), then itself.
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.5
    for pid in "${STARTED[@]}"; do
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

want() { [[ " $PEERS " == *" $1 "* ]]; }
say() { printf '\n>> %s\n' "$*"; }

# The gateway core: the bench pins itself to core 0 and tokenyard to 1.
PIN=()
if [[ $(nproc) -ge 2 && ${BENCH_PIN:-1} != 0 ]] && command -v taskset >/dev/null; then
    PIN=(taskset -c 1)
fi

mkdir -p "$SCRATCH"

# ---- install (idempotent) -------------------------------------------------
if want nginx && ! command -v nginx >/dev/null; then
    say "installing nginx (Debian)"
    apt-get update -qq
    # Install only; do not leave a system nginx running on port 80.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null || { rm -f /usr/sbin/policy-rc.d; exit 1; }
    rm -f /usr/sbin/policy-rc.d
fi
LITELLM=$SCRATCH/litellm-venv/bin/litellm
installed=$("$SCRATCH/litellm-venv/bin/pip" show litellm 2>/dev/null || true)
if want litellm && [[ $installed != *"Version: $LITELLM_VERSION"* ]]; then
    say "installing litellm[proxy]==$LITELLM_VERSION into $SCRATCH/litellm-venv"
    python3 -m venv "$SCRATCH/litellm-venv"
    "$SCRATCH/litellm-venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"
fi
PORTKEY=$SCRATCH/portkey/node_modules/@portkey-ai/gateway
if want portkey && ! grep -q "\"version\": \"$PORTKEY_VERSION\"" "$PORTKEY/package.json" 2>/dev/null; then
    say "installing @portkey-ai/gateway@$PORTKEY_VERSION into $SCRATCH/portkey"
    mkdir -p "$SCRATCH/portkey"
    (cd "$SCRATCH/portkey" && { [[ -f package.json ]] || npm init -y >/dev/null; } &&
        npm install --no-audit --no-fund --loglevel=error "@portkey-ai/gateway@$PORTKEY_VERSION")
fi

# ---- start the peers --------------------------------------------------------
wait_http() { # NAME URL PID LOG
    local i
    for i in $(seq 1 300); do
        if curl -s -o /dev/null --max-time 1 "$2"; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then
            echo "$1 exited while starting; its log:" >&2
            tail -n 40 "$4" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "$1 did not answer $2 within 60 s; its log:" >&2
    tail -n 40 "$4" >&2
    exit 1
}

ARGS=(--upstream-port "$UPSTREAM_PORT")
CONFIG=""
VERSIONS=()

if want litellm; then
    {
        echo "model_list:"
        for k in "${KEYS[@]}"; do
            cat <<EOF
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$UPSTREAM_PORT/v1
      api_key: $k
EOF
        done
        cat <<EOF
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 3
litellm_settings:
  num_retries: 3
  request_timeout: 30
  telemetry: false
EOF
    } >"$RUN/litellm.yaml"
    say "starting LiteLLM $LITELLM_VERSION on :$LITELLM_PORT (one worker)"
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
        "${PIN[@]}" "$LITELLM" --config "$RUN/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
        --num_workers 1 --telemetry False >"$RUN/litellm.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http litellm "http://127.0.0.1:$LITELLM_PORT/health/liveliness" "$pid" "$RUN/litellm.log"
    ARGS+=(--target "litellm=http://127.0.0.1:$LITELLM_PORT/v1" --pid "litellm=$pid")
    VERSIONS+=("litellm[proxy] $LITELLM_VERSION ($("$SCRATCH/litellm-venv/bin/python" -V))")
fi

if want portkey; then
    target() { printf '{"provider":"openai","api_key":"%s","custom_host":"http://127.0.0.1:%s/v1"}' "$1" "$UPSTREAM_PORT"; }
    chain() { # keys in the order one fallback chain tries them
        printf '{"strategy":{"mode":"fallback","on_status_codes":[429]},"targets":[%s,%s,%s]}' \
            "$(target "$1")" "$(target "$2")" "$(target "$3")"
    }
    # Load-balance over three fallback chains, each starting at another
    # key: load is spread over the keys, and a 429 moves to the next key.
    CONFIG=$(printf '{"strategy":{"mode":"loadbalance"},"targets":[%s,%s,%s]}' \
        "$(chain "${KEYS[0]}" "${KEYS[1]}" "${KEYS[2]}")" \
        "$(chain "${KEYS[1]}" "${KEYS[2]}" "${KEYS[0]}")" \
        "$(chain "${KEYS[2]}" "${KEYS[0]}" "${KEYS[1]}")")
    say "starting Portkey gateway $PORTKEY_VERSION on :$PORTKEY_PORT"
    NODE_ENV=production "${PIN[@]}" node "$PORTKEY/build/start-server.js" --port="$PORTKEY_PORT" --headless \
        >"$RUN/portkey.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http portkey "http://127.0.0.1:$PORTKEY_PORT/" "$pid" "$RUN/portkey.log"
    ARGS+=(--target "portkey=http://127.0.0.1:$PORTKEY_PORT/v1" --header "portkey=x-portkey-config:$CONFIG" --pid "portkey=$pid")
    VERSIONS+=("@portkey-ai/gateway $PORTKEY_VERSION (node $(node --version))")
fi

if want nginx; then
    mkdir -p "$RUN/nginx"
    cat >"$RUN/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx/body;
    proxy_temp_path $RUN/nginx/proxy;
    fastcgi_temp_path $RUN/nginx/fastcgi;
    uwsgi_temp_path $RUN/nginx/uwsgi;
    scgi_temp_path $RUN/nginx/scgi;
    tcp_nodelay on;
    keepalive_requests 1000000;
    upstream bench {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The floor holds one key, as a gateway would.
            proxy_set_header Authorization "Bearer ${KEYS[0]}";
            proxy_buffering off;
        }
    }
}
EOF
    say "starting nginx on :$NGINX_PORT (one worker)"
    "${PIN[@]}" nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" >"$RUN/nginx.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http nginx "http://127.0.0.1:$NGINX_PORT/" "$pid" "$RUN/nginx.log"
    ARGS+=(--target "nginx=http://127.0.0.1:$NGINX_PORT/v1" --pid "nginx=$pid" --proxy-only nginx)
    VERSIONS+=("$(nginx -v 2>&1)")
fi

say "peers: ${VERSIONS[*]:-none}"
shown="${ARGS[*]}"
[[ -n $CONFIG ]] && shown=${shown//"$CONFIG"/<config>}
say "cargo bench --bench gateway -- $shown"
cd "$ROOT"
cargo bench --bench gateway -- "${ARGS[@]}"
echo
echo "install cache kept in $SCRATCH (remove it to reinstall)"
