#!/usr/bin/env bash
# The main job on the demo data: seed the demo command center (SIMULATED ratings), train a LoRA adapter with DPO
# (cpu preset), evaluate it against the base model on held-out scenarios and on the hand-written natural-question set
# (answers constrained to the answer schema, as served), and export a verified q4_k_m GGUF with its Modelfile
# (registered with Ollama when OLLAMA_HOST answers).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${DEMO_OUTPUT:-demo_output}
RUN=${DEMO_RUN:-demo-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
$PY manage.py migrate --noinput
$PY manage.py seed_demo --write-files "$OUT"
$PY manage.py train_dpo --config cpu --run-name "$RUN"
# The held-out split is capped at 48 pairs/scenarios to keep the job near 20 minutes on 2 cores; the natural set is whole.
$PY manage.py evaluate_model --checkpoint "$RUN" --compare-base --decoding constrained --limit 48
$PY manage.py evaluate_model --checkpoint "$RUN" --compare-base --decoding constrained --natural
register=()
if $PY -c "import os, sys, httpx; httpx.get(os.environ.get('OLLAMA_HOST', 'http://127.0.0.1:11434') + '/api/tags', timeout=2)" 2>/dev/null; then
  register=(--register)
fi
$PY manage.py export_model --checkpoint "$RUN" --quantization q4_k_m "${register[@]}"
cat <<MSG

Demo done. Run folder: rl_checkpoints/$RUN (config.json, metrics.jsonl, tensorboard/, final/, evaluation.json and
evaluation-natural.json with their .png and -confusion.png, exports/q4_k_m/ with model-q4_k_m.gguf and Modelfile).
  Rate picks:   make serve, then open http://127.0.0.1:8000/rate/ (user 'demo', password 'demo-rater-password')
  Browse:       http://127.0.0.1:8000/admin/   (same account; demo only)
  Use in Ollama: cd rl_checkpoints/$RUN/exports/q4_k_m && ollama create cc-widget-selector:$RUN -f Modelfile
MSG
