# Sourced by the scripts that ask llama-server for references (llama-cpp-greedy.sh,
# llama-cpp-logits.sh). Needs `bin` (a llama.cpp build's bin folder) and `tmp` (a scratch
# folder); `cleanup` stops the server and removes `tmp` (trap it on EXIT).
server_pid=""

# start_llama_server MODEL [llama-server options…]: on a free port of 127.0.0.1 (`port`),
# returns once /health answers; exits with the end of its log if the server dies first.
start_llama_server() {
  local model=$1
  shift
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin/llama-server" -m "$model" \
    --host 127.0.0.1 --port "$port" -np 1 -t "$(nproc)" "$@" >"$tmp/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$tmp/server.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "llama-server did not get ready" >&2
  exit 1
}

stop_llama_server() {
  [[ -z $server_pid ]] || { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  server_pid=""
}

cleanup() {
  stop_llama_server
  rm -rf "$tmp"
}
