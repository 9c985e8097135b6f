#!/usr/bin/env bash
# The gateway's user-space instructions per request, counted by callgrind:
# a figure that does not drift with the machine's load, unlike CPU time on
# a shared VM, so a change of a few per cent shows in one run.
#
#   bash benches/instructions.sh                # the release build of this tree
#   BIN=/path/to/tokenyard bash benches/instructions.sh   # another binary
#   N=5000 bash benches/instructions.sh         # more requests (default 2000)
#
# nginx (Debian's) plays the upstream: one OpenAI-style JSON answer, with
# usage, for every POST. The release tokenyard runs headless under
# callgrind in front of it with three keys, a Python client sends 400
# requests to warm up, the counters are zeroed, then N requests over four
# keep-alive connections are counted. Prints the total and the count per
# request; the callgrind file stays in the printed directory for
# `callgrind_annotate --inclusive=yes`.
#
# Opt-in (not run by CI): needs valgrind, nginx and python3 (apt-get install
# valgrind nginx python3), and about a minute. Ports 18500 and 18501 must
# be free.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-2000}
BIN=${BIN:-}
if [[ -z $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
    BIN=$ROOT/target/release/tokenyard
fi
for tool in valgrind callgrind_control callgrind_annotate nginx python3 curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind nginx python3 curl)" >&2; exit 1; }
done

RUN=$(mktemp -d -t tokenyard-instr.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$RUN"/{body,proxy,fastcgi,uwsgi,scgi}

cat >"$RUN/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $RUN/body;
    proxy_temp_path $RUN/proxy;
    fastcgi_temp_path $RUN/fastcgi;
    uwsgi_temp_path $RUN/uwsgi;
    scgi_temp_path $RUN/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:18500;
        location / {
            default_type application/json;
            return 200 '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}';
        }
    }
}
EOF

{
    printf 'listen = "127.0.0.1:18501"\nstate_file = "%s/state.json"\n\n' "$RUN"
    printf '[pool]\ntiers = ["primary"]\nmax_in_flight = 4096\n\n[gateway]\nmax_concurrency = 20000\n\n'
    printf '[[provider]]\nname = "bench"\nkind = "openai"\nbase_url = "http://127.0.0.1:18500/v1"\nmodels = ["*"]\n'
    for i in 1 2 3; do
        printf '\n[[credential]]\nname = "bench-%s"\ntier = "primary"\napi_key = "sk-fake-bench-%s-not-a-real-key"\n' "$i" "$i"
    done
} >"$RUN/tokenyard.toml"

cat >"$RUN/drive.py" <<'EOF'
import http.client, sys, threading
n, conns = int(sys.argv[1]), 4
body = b'{"model":"bench-model","messages":[{"role":"user","content":"Say hello from the bench."}],"max_tokens":16}'
failed = []
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", 18501)
    for _ in range(k):
        c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            failed.append(r.status)
threads = [threading.Thread(target=run, args=(n // conns,)) for _ in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit(f"{len(failed)} requests failed: {sorted(set(failed))}")
EOF

nginx -c "$RUN/nginx.conf" -p "$RUN" >/dev/null 2>&1 &
PIDS+=($!)
valgrind --tool=callgrind --callgrind-out-file="$RUN/callgrind.out" \
    "$BIN" serve --no-tui --config "$RUN/tokenyard.toml" >"$RUN/tokenyard.log" 2>&1 &
VG=$!
PIDS+=("$VG")
for _ in $(seq 1 300); do
    curl -s -o /dev/null http://127.0.0.1:18501/healthz && break
    kill -0 "$VG" 2>/dev/null || { echo "tokenyard exited; its log:" >&2; tail -n 20 "$RUN/tokenyard.log" >&2; exit 1; }
    sleep 0.2
done
python3 "$RUN/drive.py" 400
callgrind_control -z "$VG" >/dev/null
python3 "$RUN/drive.py" "$N"
callgrind_control -d "$VG" >/dev/null
total=$(callgrind_annotate "$RUN/callgrind.out.1" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
trap - EXIT
cleanup
echo "binary: $BIN"
echo "instructions: $total for $N requests, $((total / N)) per request"
echo "profile: $RUN/callgrind.out.1 (callgrind_annotate --inclusive=yes)"
