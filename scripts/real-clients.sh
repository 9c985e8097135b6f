#!/usr/bin/env bash
# Proves tokenyard works with real clients that nobody here wrote: the OpenAI
# and Anthropic Python SDKs, OpenAI's Codex CLI and Anthropic's Claude Code,
# each completing a request while the simulated provider forces at least one
# 429 rotation behind the gateway.
#
# Opt-in: not part of `cargo test` or CI, because it installs the clients
# from PyPI and npm (pinned, under target/real-clients/, skipped when the
# pinned version is already there). After the install nothing talks to
# anything but 127.0.0.1.
#
#   scripts/real-clients.sh            # every phase
#   scripts/real-clients.sh codex      # only the phases whose name contains "codex"
#
# Environment:
#   TOKENYARD_BIN          gateway binary (default target/release/tokenyard,
#                          built first with `cargo build --release`)
#   CODEX_VERSION          @openai/codex on npm        (default 0.171.0)
#   CLAUDE_CODE_VERSION    @anthropic-ai/claude-code   (default 2.1.332)
#   OPENAI_PY_VERSION      openai on PyPI              (default 3.60.0)
#   ANTHROPIC_PY_VERSION   anthropic on PyPI           (default 2.17.0)
#   CLIENT_TIMEOUT         seconds one client run may take (default 120)
#   TOKENYARD_LOG          gateway log level (default debug: a line per request)
#
# Each phase gets its own simulated provider and gateway on fresh ports, so
# each forces its own rotation: key-1's window is spent straight at the sim
# before the gateway starts, the fresh gateway leases key-1 first, gets the
# sim's 429, cools key-1 for the hinted time and retries on key-2. A phase
# passes when the client got the sim's whole answer and the gateway's
# /admin/pool shows upstream_429 >= 1 and client_429 == 0 (the client never
# saw a 429). Logs: target/real-clients/logs/. Exit status: 0 only if every
# phase passed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$ROOT/target/real-clients"
LOGS="$WORK/logs"
RUNS="$WORK/runs"
VENV="$WORK/venv"
NPM_PREFIX="$WORK/npm"
PIDFILE="$WORK/pids"

TOKENYARD_BIN="${TOKENYARD_BIN:-$ROOT/target/release/tokenyard}"
CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
CLAUDE_CODE_VERSION="${CLAUDE_CODE_VERSION:-2.1.332}"
OPENAI_PY_VERSION="${OPENAI_PY_VERSION:-3.60.0}"
ANTHROPIC_PY_VERSION="${ANTHROPIC_PY_VERSION:-2.17.0}"
CLIENT_TIMEOUT="${CLIENT_TIMEOUT:-120}"
GATEWAY_LOG_LEVEL="${TOKENYARD_LOG:-debug}"

# The key clients present to the gateway; the sim's own keys (sk-sim-N) stay
# in the gateway's config.
CLIENT_KEY="ty-real-clients"
# The sim's answer: 8 numbered pieces, whole and once.
EXPECT='[0][1][2][3][4][5][6][7]'

# Loopback never goes through a proxy, whatever the caller's environment says.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

log() { printf '%s\n' "$*" >&2; }
# Inside a phase: its stdout's last line is the phase's one-line result.
fail() { echo "$*"; return 1; }

# --- processes ---------------------------------------------------------------

# Every background process the script starts is written to $PIDFILE, so the
# EXIT trap can end them whichever way the script stops (failure, Ctrl-C,
# a phase's subshell dying half-way).
start_bg() { # start_bg LOGFILE CMD...
    local out="$1"; shift
    "$@" >"$out" 2>&1 &
    echo "$!" >>"$PIDFILE"
    echo "$!"
}

stop_pids() { # stop_pids PID... : TERM, up to 5 s to drain, then KILL
    local pid i
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    if [[ -f "$PIDFILE" ]]; then
        # shellcheck disable=SC2046 # one PID per line
        stop_pids $(cat "$PIDFILE")
        rm -f "$PIDFILE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port (the kernel picks it; the tiny race until our process
# binds it is harmless on a machine running one copy of this script).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # wait_http NAME URL PID : until URL answers; fails if PID died or after 20 s
    local name="$1" url="$2" pid="$3" i
    for i in $(seq 200); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || fail "$name exited before $url answered"
        sleep 0.1
    done
    fail "$name: $url did not answer within 20 s"
}

# --- installs (the only network use besides loopback) ------------------------

install_python_sdks() {
    local want="openai==$OPENAI_PY_VERSION anthropic==$ANTHROPIC_PY_VERSION"
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - "$OPENAI_PY_VERSION" "$ANTHROPIC_PY_VERSION" <<'EOF' 2>/dev/null
import sys, openai, anthropic
sys.exit(0 if (openai.__version__, anthropic.__version__) == tuple(sys.argv[1:]) else 1)
EOF
    then
        log "python: $want already in $VENV"
        return
    fi
    log "python: installing $want into $VENV"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    # shellcheck disable=SC2086 # two requirement words
    "$VENV/bin/python" -m pip install --quiet $want
}

npm_installed_version() { # npm_installed_version PACKAGE
    local pj="$NPM_PREFIX/node_modules/$1/package.json"
    if [[ -f "$pj" ]]; then node -p "require(process.argv[1]).version" "$pj"; fi
}

install_npm_client() { # install_npm_client PACKAGE VERSION
    if [[ "$(npm_installed_version "$1")" == "$2" ]]; then
        log "npm: $1@$2 already in $NPM_PREFIX"
        return
    fi
    log "npm: installing $1@$2 into $NPM_PREFIX"
    mkdir -p "$NPM_PREFIX"
    # Both CLIs ship their native binary as an optional dependency of the
    # npm package, so a plain registry install brings everything.
    npm install --prefix "$NPM_PREFIX" --no-fund --no-audit --loglevel=error "$1@$2" >&2
}

ensure_gateway_binary() {
    # The default binary is rebuilt from this checkout (a no-op when it is
    # up to date), so a run never records an older build's behaviour.
    if [[ "$TOKENYARD_BIN" == "$ROOT/target/release/tokenyard" ]]; then
        log "building $TOKENYARD_BIN (cargo build --release)"
        (cd "$ROOT" && cargo build --release --locked)
    fi
    [[ -x "$TOKENYARD_BIN" ]] || { log "no gateway binary at $TOKENYARD_BIN"; exit 1; }
}

# --- one phase's sim and gateway ---------------------------------------------

# Set by start_sim / start_gateway / run_client for the phase running in
# this subshell; its EXIT trap ends the three processes.
SIM_PORT="" SIM_PID="" GW_PORT="" GW_PID="" CLIENT_PID="" PHASE=""

start_sim() {
    SIM_PORT="$(free_port)"
    # 3 accounts, 5 requests per 10-minute window each: the window cannot
    # roll over during a phase, so the 429 below is certain.
    SIM_PID="$(start_bg "$LOGS/$PHASE.sim.log" \
        "$TOKENYARD_BIN" sim --listen "127.0.0.1:$SIM_PORT" --keys 3 --rpm 5 --window 10m)"
    wait_http sim "http://127.0.0.1:$SIM_PORT/sim/stats" "$SIM_PID"
}

# Spends key-1's whole window straight at the sim, so the gateway's first
# lease (key-1) is answered 429 and the gateway has to rotate.
spend_key1() {
    local i code
    for i in 1 2 3 4 5; do
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
            "http://127.0.0.1:$SIM_PORT/v1/chat/completions" \
            -H 'authorization: Bearer sk-sim-1' -H 'content-type: application/json' \
            -d '{"model":"sim-small","messages":[{"role":"user","content":"x"}],"max_tokens":1}')"
        [[ "$code" == 200 ]] || fail "spending key-1 at the sim: request $i got HTTP $code"
    done
}

start_gateway() { # start_gateway KIND [EXTRA_PROVIDER_LINE]
    local kind="$1" extra="${2:-}" dir="$RUNS/$PHASE" n
    GW_PORT="$(free_port)"
    # A fresh state file: a previous run's cooldowns must not leak in.
    rm -rf "$dir" && mkdir -p "$dir"
    {
        printf 'listen = "127.0.0.1:%s"\n' "$GW_PORT"
        printf 'state_file = "%s/state.json"\n' "$dir"
        printf 'client_keys = ["%s"]\n\n' "$CLIENT_KEY"
        printf '[[provider]]\nname = "sim"\nkind = "%s"\n' "$kind"
        printf 'base_url = "http://127.0.0.1:%s/v1"\nmodels = ["sim-*"]\n' "$SIM_PORT"
        [[ -z "$extra" ]] || printf '%s\n' "$extra"
        for n in 1 2 3; do
            printf '\n[[credential]]\nname = "key-%s"\napi_key = "sk-sim-%s"\n' "$n" "$n"
        done
    } >"$dir/tokenyard.toml"
    GW_PID="$(TOKENYARD_LOG="$GATEWAY_LOG_LEVEL" start_bg "$LOGS/$PHASE.gateway.log" \
        "$TOKENYARD_BIN" serve --no-tui --config "$dir/tokenyard.toml")"
    wait_http gateway "http://127.0.0.1:$GW_PORT/healthz" "$GW_PID"
}

setup_phase() { # setup_phase KIND [EXTRA_PROVIDER_LINE]
    start_sim
    spend_key1
    start_gateway "$@"
}

# The rotation happened and stayed invisible: prints "upstream 429s N, client
# 429s 0" and fails otherwise.
check_pool() {
    curl -fsS --max-time 5 "http://127.0.0.1:$GW_PORT/admin/pool" | python3 -c '
import json, sys
snap = json.load(sys.stdin)
t = snap["totals"]
up, cl = t["upstream_429"], t["client_429"]
pinned = snap.get("pinned", {})
sessions = snap.get("sessions", 0)
print(f"upstream 429s {up}, client 429s {cl}; sessions {sessions} {pinned}")
sys.exit(0 if up >= 1 and cl == 0 else 1)'
}

# Runs the phase's client under a timeout, its output in the phase's client
# log; on failure says how it ended.
run_client() { # run_client CMD...
    local rc=0 out="$LOGS/$PHASE.client.log"
    # `timeout` puts the client in a process group of its own, out of reach
    # of a Ctrl-C; waited for in the background, the phase still stops at
    # once on Ctrl-C and the EXIT trap ends the client through its PID.
    timeout -k 10 "$CLIENT_TIMEOUT" "$@" >"$out" 2>&1 </dev/null &
    CLIENT_PID=$!
    echo "$CLIENT_PID" >>"$PIDFILE"
    wait "$CLIENT_PID" || rc=$?
    # At debug level the gateway logs a line per request as it ends (499
    # when the client went away): the last one tells a stuck client from a
    # stream that never ended.
    [[ $rc -ne 124 && $rc -ne 137 ]] || fail "client timed out after $CLIENT_TIMEOUT s;" \
        "gateway's last: $(grep -o 'DEBUG request [0-9]* .*' "$LOGS/$PHASE.gateway.log" | tail -n 1 | cut -c7-)"
    [[ $rc -eq 0 ]] || fail "client exited $rc: $(grep -v '^[[:space:]]*$' "$out" | tail -n 1)"
}

# A CLI printed the sim's whole answer and nothing past it (a "[8]" would
# mean the answer overran, e.g. a max_tokens taken as the piece count).
answered() { # answered CLIENT_NAME
    local out="$LOGS/$PHASE.client.log"
    grep -qF "$EXPECT" "$out" || fail "answer $EXPECT not in $1's output"
    ! grep -qF '[8]' "$out" || fail "$1 printed more than the 8 pieces"
}

sim_stats() { curl -fsS --max-time 5 "http://127.0.0.1:$SIM_PORT/sim/stats"; }

# --- the SDK programs ------------------------------------------------------------
# Written out at start so a failing phase can be rerun by hand:
#   TY_BASE_URL=... TY_KEY=... TY_EXPECT=... target/real-clients/venv/bin/python target/real-clients/openai_sdk.py all

write_sdk_programs() {
    # argv[1]: "all" (Responses, embeddings, chat) or "responses" (Responses only).
    cat >"$WORK/openai_sdk.py" <<'EOF'
import os, sys
from openai import OpenAI

EXPECT = os.environ["TY_EXPECT"]
# max_retries=0: an SDK retry must not be able to hide a 429.
client = OpenAI(base_url=os.environ["TY_BASE_URL"], api_key=os.environ["TY_KEY"],
                max_retries=0, timeout=60)

def check(label, got):
    if got != EXPECT:
        sys.exit(f"{label}: got {got!r}, want {EXPECT!r}")
    print(f"ok {label}: {got}")

r = client.responses.create(model="sim-large", input="Say hello")
check("responses.create", r.output_text)

deltas, types, completed = [], [], None
for ev in client.responses.create(model="sim-large", input="Say hello", stream=True):
    types.append(ev.type)
    if ev.type == "response.output_text.delta":
        deltas.append(ev.delta)
    elif ev.type == "response.completed":
        completed = ev.response
print("stream events:", " ".join(types))
check("responses.create(stream=True) deltas", "".join(deltas))
if completed is None or types[-1] != "response.completed":
    sys.exit(f"stream did not end with response.completed: {types[-3:]}")
check("responses.create(stream=True) response.completed", completed.output_text)

if sys.argv[1] == "all":
    # The SDK asks for base64 unless told otherwise and decodes it to floats;
    # the raw body shows which encoding the gateway passed back.
    raw = client.embeddings.with_raw_response.create(model="sim-small", input=["a", "b"])
    wire = "base64" if isinstance(raw.http_response.json()["data"][0]["embedding"], str) else "float"
    emb = raw.parse()
    vecs = [d.embedding for d in emb.data]
    if len(vecs) != 2 or not all(v and all(isinstance(x, float) for x in v) for v in vecs):
        sys.exit(f"embeddings: want 2 float vectors, got {vecs!r:.200}")
    print(f"ok embeddings.create: 2 vectors of {len(vecs[0])} floats (wire encoding: {wire})")

    c = client.chat.completions.create(
        model="sim-small", messages=[{"role": "user", "content": "Say hello"}])
    check("chat.completions.create", c.choices[0].message.content)
EOF
    cat >"$WORK/anthropic_sdk.py" <<'EOF'
import os, sys
from anthropic import Anthropic

EXPECT = os.environ["TY_EXPECT"]
client = Anthropic(base_url=os.environ["TY_BASE_URL"], api_key=os.environ["TY_KEY"],
                   max_retries=0, timeout=60)
messages = [{"role": "user", "content": "Say hello"}]

def check(label, got):
    if got != EXPECT:
        sys.exit(f"{label}: got {got!r}, want {EXPECT!r}")
    print(f"ok {label}: {got}")

n = client.messages.count_tokens(model="sim-large", messages=messages)
if not n.input_tokens > 0:
    sys.exit(f"count_tokens: input_tokens {n.input_tokens}")
print(f"ok messages.count_tokens: input_tokens {n.input_tokens}")

with client.messages.stream(model="sim-large", max_tokens=1024, messages=messages) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
check("messages.stream text_stream", text)
check("messages.stream final message", "".join(b.text for b in final.content if b.type == "text"))
print(f"stop_reason {final.stop_reason}")

m = client.messages.create(model="sim-large", max_tokens=1024, messages=messages)
check("messages.create", "".join(b.text for b in m.content if b.type == "text"))
EOF
}

# --- phases --------------------------------------------------------------------
# Each runs in its own subshell (see run_phase) and prints its one-line result
# as its last line of stdout; everything else goes to the phase's client log.

phase_openai_sdk() {
    setup_phase openai
    TY_BASE_URL="http://127.0.0.1:$GW_PORT/v1" TY_KEY="$CLIENT_KEY" TY_EXPECT="$EXPECT" \
        run_client "$VENV/bin/python" "$WORK/openai_sdk.py" all
    local pool
    pool="$(check_pool)" || fail "rotation check failed: $pool"
    echo "responses (whole + stream), embeddings ($(grep -o 'wire encoding: [a-z0-9]*' "$LOGS/$PHASE.client.log")), chat: text $EXPECT; $pool"
}

phase_openai_sdk_native() {
    setup_phase openai 'responses = "native"'
    TY_BASE_URL="http://127.0.0.1:$GW_PORT/v1" TY_KEY="$CLIENT_KEY" TY_EXPECT="$EXPECT" \
        run_client "$VENV/bin/python" "$WORK/openai_sdk.py" responses
    local pool counts
    pool="$(check_pool)" || fail "rotation check failed: $pool"
    # Native means forwarded as is: the sim must have seen /v1/responses, and
    # no chat completions beyond the 5 that spent key-1.
    counts="$(sim_stats | python3 -c '
import json, sys
accts = json.load(sys.stdin)["accounts"]
n = lambda ep: sum(a.get("by_endpoint", {}).get(ep, 0) for a in accts)
r, c = n("responses"), n("chat_completions")
print(f"sim saw {r} responses, {c} chat_completions")
sys.exit(0 if r >= 2 and c == 5 else 1)')" \
        || fail "not forwarded natively: $counts"
    echo "responses (whole + stream) forwarded to the sim's /v1/responses: text $EXPECT; $counts; $pool"
}

phase_anthropic_sdk() {
    setup_phase anthropic
    TY_BASE_URL="http://127.0.0.1:$GW_PORT" TY_KEY="$CLIENT_KEY" TY_EXPECT="$EXPECT" \
        run_client "$VENV/bin/python" "$WORK/anthropic_sdk.py"
    local pool tokens
    pool="$(check_pool)" || fail "rotation check failed: $pool"
    tokens="$(grep -o 'input_tokens [0-9]*' "$LOGS/$PHASE.client.log")"
    echo "count_tokens ($tokens), messages.stream and messages.create: text $EXPECT; $pool"
}

phase_codex() { # phase_codex [PROMPT]
    local prompt="${1:-Say hello}"
    setup_phase openai
    local dir="$RUNS/$PHASE" bin="$NPM_PREFIX/node_modules/.bin/codex"
    # An empty git repo to work in, and a CODEX_HOME and HOME of its own so
    # no config, login or history of the caller's is read or written.
    mkdir -p "$dir/repo" "$dir/codex-home" "$dir/home"
    git -C "$dir/repo" init -q
    # request/stream_max_retries = 0: Codex's own retries must not hide a 429.
    cd "$dir/repo"
    HOME="$dir/home" CODEX_HOME="$dir/codex-home" TY_KEY="$CLIENT_KEY" \
        run_client "$bin" exec --skip-git-repo-check \
        -c check_for_update_on_startup=false \
        -c model_provider=ty \
        -c "model_providers.ty={name=\"ty\",base_url=\"http://127.0.0.1:$GW_PORT/v1\",env_key=\"TY_KEY\",wire_api=\"responses\",request_max_retries=0,stream_max_retries=0}" \
        -m sim-large "$prompt"
    answered codex
    local pool
    pool="$(check_pool)" || fail "rotation check failed: $pool"
    if [[ "$prompt" == "Say hello" ]]; then
        echo "codex exec (Responses API, translated to Chat Completions): printed $EXPECT; $pool"
        return
    fi
    # The sim answered the first request with a call of Codex's first tool
    # (as a function_call item); Codex ran it (its arguments do not fit, so
    # it answers with an error as the call's output) and sent the output
    # back: a second request, whose answer is the text.
    local turns
    turns="$(curl -fsS --max-time 5 "http://127.0.0.1:$GW_PORT/admin/pool" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["totals"]["succeeded"])')"
    [[ "$turns" -ge 2 ]] || fail "one request only: the tool call was not answered"
    echo "codex exec \"sim:call-tool\": a function_call item, Codex's function_call_output back, then $EXPECT ($turns requests); $pool"
}
phase_codex_hello() { phase_codex "Say hello"; }
phase_codex_tool_call() { phase_codex "sim:call-tool"; }

phase_claude_code() { # phase_claude_code PROVIDER_KIND
    local kind="$1"
    setup_phase "$kind"
    local dir="$RUNS/$PHASE" bin="$NPM_PREFIX/node_modules/.bin/claude"
    mkdir -p "$dir/home" "$dir/work"
    # HOME of its own: no settings, login or history of the caller's.
    # NONESSENTIAL_TRAFFIC off: no telemetry, error reports or update checks,
    # so the run talks to the gateway only. The small/fast model is pointed
    # at the sim too, in case this version asks it for anything.
    cd "$dir/work"
    HOME="$dir/home" \
        ANTHROPIC_BASE_URL="http://127.0.0.1:$GW_PORT" ANTHROPIC_API_KEY="$CLIENT_KEY" \
        ANTHROPIC_SMALL_FAST_MODEL=sim-small ANTHROPIC_DEFAULT_HAIKU_MODEL=sim-small \
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
        run_client "$bin" -p "Say hello" --model sim-large
    answered claude
    local pool what
    pool="$(check_pool)" || fail "rotation check failed: $pool"
    if [[ "$kind" == anthropic ]]; then what="Messages API, forwarded"; else what="Messages API, translated to Chat Completions"; fi
    echo "claude -p ($what): printed $EXPECT; $pool"
}
phase_claude_code_anthropic() { phase_claude_code anthropic; }
phase_claude_code_openai() { phase_claude_code openai; }

# --- running and reporting -----------------------------------------------------

declare -a SUMMARY=()
FAILED=0

run_phase() { # run_phase NAME FUNCTION
    local name="$1" fn="$2" out rc started=$SECONDS
    log ""
    log "== $name"
    # A subshell per phase: `set -e` stays in force inside it (it would be
    # off in an `if`), its EXIT trap ends this phase's sim, gateway and
    # client, and a failure is recorded instead of ending the script. It
    # runs in the background and is waited for, so a signal to this script
    # is handled at once rather than after the phase (the EXIT trap then
    # TERMs the phase, whose own trap ends what it started).
    set +e
    (
        set -e
        PHASE="$name"
        trap 'stop_pids $SIM_PID $GW_PID $CLIENT_PID' EXIT
        trap 'exit 143' TERM
        "$fn"
    ) >"$RUNS/$name.result" &
    echo "$!" >>"$PIDFILE"
    wait "$!"
    rc=$?
    set -e
    out="$(cat "$RUNS/$name.result")"
    # 130/143: the phase was interrupted; stop here (the EXIT trap cleans up).
    [[ $rc -ne 130 && $rc -ne 143 ]] || exit "$rc"
    local line="${out##*$'\n'}" took=$((SECONDS - started))
    [[ -n "$line" ]] || line="stopped early (exit $rc)"
    line="${line//|/\\|}" # it goes into a Markdown table
    if [[ $rc -eq 0 ]]; then
        log "PASS $name (${took} s): $line"
        SUMMARY+=("| $name | PASS | $line | ${took} s |")
    else
        log "FAIL $name (${took} s): $line"
        SUMMARY+=("| $name | FAIL | $line | ${took} s |")
        FAILED=1
        local f
        for f in client gateway sim; do
            [[ -f "$LOGS/$name.$f.log" ]] || continue
            log "-- tail of $LOGS/$name.$f.log"
            tail -n 25 "$LOGS/$name.$f.log" >&2
        done
    fi
}

main() {
    local started=$SECONDS filter="${1:-}"
    mkdir -p "$LOGS" "$RUNS"
    rm -f "$PIDFILE"

    install_python_sdks
    install_npm_client @openai/codex "$CODEX_VERSION"
    install_npm_client @anthropic-ai/claude-code "$CLAUDE_CODE_VERSION"
    ensure_gateway_binary

    write_sdk_programs

    local phases=(
        "openai-python-sdk:phase_openai_sdk"
        "openai-python-sdk-native-responses:phase_openai_sdk_native"
        "anthropic-python-sdk:phase_anthropic_sdk"
        "codex-cli:phase_codex_hello"
        "codex-cli-tool-call:phase_codex_tool_call"
        "claude-code:phase_claude_code_anthropic"
        "claude-code-via-openai-provider:phase_claude_code_openai"
    )
    local p
    for p in "${phases[@]}"; do
        [[ -z "$filter" || "${p%%:*}" == *"$filter"* ]] || continue
        run_phase "${p%%:*}" "${p#*:}"
    done

    local py="$VENV/bin/python"
    log ""
    cat <<EOF

### Real clients through tokenyard ($(date -u +%Y-%m-%d), scripts/real-clients.sh, $((SECONDS - started)) s)

Each phase: a fresh simulated provider (3 keys, 5 requests per 10 min) with
key-1's window already spent, a fresh gateway leasing key-1 first; the client
must get the whole answer while the gateway rotates past the 429 unseen.

| client | version |
|---|---|
| tokenyard | $("$TOKENYARD_BIN" --version 2>/dev/null || echo "?") ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")) |
| openai (PyPI) | $("$py" -c 'import openai; print(openai.__version__)') |
| anthropic (PyPI) | $("$py" -c 'import anthropic; print(anthropic.__version__)') |
| codex --version | $("$NPM_PREFIX/node_modules/.bin/codex" --version 2>/dev/null | tail -n 1) |
| claude --version | $(mkdir -p "$RUNS/home" && HOME="$RUNS/home" CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 "$NPM_PREFIX/node_modules/.bin/claude" --version 2>/dev/null | tail -n 1) |
| python, node | $("$py" --version 2>&1 | cut -d' ' -f2), $(node --version) |

| phase | result | detail | time |
|---|---|---|---|
EOF
    printf '%s\n' "${SUMMARY[@]}"
    return "$FAILED"
}

main "$@"
