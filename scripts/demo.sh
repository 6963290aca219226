#!/usr/bin/env bash
# The main job on the demo data: seed the demo command center (SIMULATED ratings), train a LoRA adapter with DPO
# (cpu preset), evaluate it against the base model on held-out scenarios and on the hand-written natural-question set
# (its gate part, which the deploy gate scores too, and its sealed part, which nothing else reads)
# (answers constrained to the answer schema, as served), export a verified q4_k_m GGUF with its Modelfile, register
# it with Ollama, put it through the deploy gate (against the live model, or the base when nothing is live) and, if
# it passes, make it live and serve a few new questions through Ollama's /api/chat, then the same questions through
# llama.cpp's real OpenAI-compatible server (RL_SERVING engine llama_cpp, run by manage.py serve_llama_cpp).
# Ollama: the one at OLLAMA_HOST if it answers; otherwise the SIMULATED Ollama (rl/simulated/ollama.py, which runs
# the GGUF through llama.cpp) is started for the demo on a free loopback port and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${DEMO_OUTPUT:-demo_output}
RUN=${DEMO_RUN:-demo-$(date -u +%Y%m%d-%H%M%S)}
HELD_OUT_LIMIT=48
# Training and the evaluations run on jemalloc instead of glibc's malloc, under which training steps slow by about a
# quarter over a run; both turn jemalloc's page decay off from inside (rl/core/allocator.py), without which it had
# made them slower than glibc's (docs/training-speed.md, "The memory allocator").
jemalloc=$($PY -c "from rl.core.allocator import jemalloc_path; print(jemalloc_path() or '')")
PRELOAD=${jemalloc:+LD_PRELOAD=$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}}
mkdir -p "$OUT"
PHASES="$OUT/phases-$RUN.tsv"
: > "$PHASES"
# Runs a phase and records its seconds for the closing summary (manage.py run_report --phases).
phase() {
  local name=$1 started=$SECONDS rc=0
  shift
  echo "== $name"
  "$@" || rc=$?
  printf '%s\t%s\n' "$name" $((SECONDS - started)) >> "$PHASES"
  return $rc
}
phase "seed" bash -c "$PY manage.py migrate --noinput -v 0 && $PY manage.py seed_demo --write-files '$OUT'"
# Training gets DEMO_TRAIN_MINUTES (train_dpo --max-minutes): on an AMX CPU the cpu preset's steps fit in 13; on a
# slower one the run ends sooner, with its schedule fitted, and says so (docs/training-speed.md).
phase "train" env $PRELOAD $PY manage.py train_dpo --config cpu --run-name "$RUN" --max-minutes "${DEMO_TRAIN_MINUTES:-13}"
# The held-out split is capped at 48 pairs/scenarios to keep the job near 20 minutes on 2 cores; the natural set is whole.
phase "evaluate held-out" env $PRELOAD $PY manage.py evaluate_model --checkpoint "$RUN" --compare-base --decoding constrained --limit $HELD_OUT_LIMIT
phase "evaluate natural (gate)" env $PRELOAD $PY manage.py evaluate_model --checkpoint "$RUN" --compare-base --decoding constrained --natural
# The natural set's sealed part: no gate, checkpoint choice or recipe decision ever read it (rl/data/sealed.py).
phase "evaluate natural (sealed)" env $PRELOAD $PY manage.py evaluate_model --checkpoint "$RUN" --compare-base --decoding constrained --natural sealed

serve_questions() {
  $PY manage.py pick_widget "are any air handlers in fault at the moment?" --site "HQ Tower" --role "facility manager"
  $PY manage.py pick_widget "how has the UPS load moved over the last day?" --site "Data Center East" --time-range "last 24 hours"
  $PY manage.py pick_widget "which building on campus burns the most electricity?" --site "Riverside Campus" --time-range "this month"
}
answers() { $PY -c "import sys, httpx; httpx.get(sys.argv[1] + '/api/tags', timeout=2)" "$1" 2>/dev/null; }
export OLLAMA_HOST=${OLLAMA_HOST:-http://127.0.0.1:11434}
if ! answers "$OLLAMA_HOST"; then
  port=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  $PY -m rl.simulated.ollama --port "$port" --seconds 7200 > "$OUT/simulated-ollama.log" 2>&1 &
  simulated=$!
  trap 'kill $simulated 2>/dev/null || true' EXIT
  export OLLAMA_HOST=http://127.0.0.1:$port
  for _ in $(seq 1 50); do answers "$OLLAMA_HOST" && break; sleep 0.2; done
  echo "No Ollama answered; started the SIMULATED Ollama at $OLLAMA_HOST (runs the GGUF through llama.cpp)."
fi
phase "export" $PY manage.py export_model --checkpoint "$RUN" --quantization q4_k_m --register
# DEMO_EVALUATE_GGUF=1: the served file too (q4_k_m through llama.cpp, same schema as a grammar) on both natural
# parts, for the report's GGUF rows; about 15 more minutes on 2 cores (llama.cpp scores and answers one question at
# a time: 6.7 min for the 86 questions the gate part had then), so not part of the 20-minute main job.
if [ "${DEMO_EVALUATE_GGUF:-0}" = 1 ]; then
  gguf=${RL_CHECKPOINT_DIR:-rl_checkpoints}/$RUN/exports/q4_k_m/model-q4_k_m.gguf
  phase "evaluate GGUF natural (gate)" $PY manage.py evaluate_model --checkpoint "$RUN" --gguf "$gguf" --decoding constrained --natural
  phase "evaluate GGUF natural (sealed)" $PY manage.py evaluate_model --checkpoint "$RUN" --gguf "$gguf" --decoding constrained --natural sealed
fi
# The gate reuses the evaluations above (same data, same constrained decoding), so it costs seconds here.
deployed=1
phase "gate" $PY manage.py gate_model --checkpoint "$RUN" --deploy --set gate_eval_limit=$HELD_OUT_LIMIT || deployed=0
if [ "$deployed" = 1 ]; then
  echo "Serving new questions through Ollama /api/chat (the picks are stored as entries to rate):"
  phase "serve (Ollama)" serve_questions
  # The same version on a real inference server: llama.cpp's OpenAI-compatible server (llama-cpp-python's), run by
  # serve_llama_cpp on the models file that registration writes, asked through the OpenAI API (docs/serving.md).
  llama_port=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  export RL_SERVING='{"engine": "llama_cpp"}' OPENAI_BASE_URL=http://127.0.0.1:$llama_port/v1 RL_LLAMA_CPP_MODELS_FILE=$OUT/llama_cpp_models.json
  rm -f "$RL_LLAMA_CPP_MODELS_FILE"
  $PY manage.py serve_llama_cpp --poll-seconds 0.5 --log-file "$OUT/llama-cpp-server.log" > "$OUT/serve-llama-cpp.log" 2>&1 &
  llama_server=$!
  trap 'kill $llama_server ${simulated:-} 2>/dev/null || true' EXIT
  $PY manage.py activate_model "cc-widget-selector:$RUN" --reason "demo: served by llama.cpp's server too"
  serves() { $PY -c "import sys, httpx; sys.exit(sys.argv[2] not in {m['id'] for m in httpx.get(sys.argv[1] + '/models', timeout=2).json()['data']})" "$OPENAI_BASE_URL" "$1" 2>/dev/null; }
  for _ in $(seq 1 120); do serves "cc-widget-selector:$RUN" && break; sleep 0.5; done
  echo "Serving the same questions through llama.cpp's real server at $OPENAI_BASE_URL (OpenAI chat completions):"
  phase "serve (llama.cpp server)" serve_questions
else
  echo "The gate rejected $RUN (reasons above): nothing was made live, so no questions are served."
fi
echo
$PY manage.py run_report "$RUN" --phases "$PHASES"
cat <<MSG

Demo done. Run folder: rl_checkpoints/$RUN (config.json, metrics.jsonl, tensorboard/, final/, evaluation.json and
evaluation-natural.json and evaluation-natural-sealed.json with their .png and -confusion.png, exports/q4_k_m/ with model-q4_k_m.gguf and Modelfile).
  Rate picks:   make serve, then open http://127.0.0.1:8000/rate/ (user 'demo', password 'demo-rater-password')
  Dashboard:    http://127.0.0.1:8000/runs/  (staff; the demo account is staff, demo only)
  Browse:       http://127.0.0.1:8000/admin/
  Use in Ollama: cd rl_checkpoints/$RUN/exports/q4_k_m && ollama create cc-widget-selector:$RUN -f Modelfile
MSG
