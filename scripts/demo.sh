#!/usr/bin/env bash
# The main job on the demo data: migrate, seed the demo command center (SIMULATED ratings), and show where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${DEMO_OUTPUT:-demo_output}
mkdir -p "$OUT"
$PY manage.py migrate --noinput
$PY manage.py seed_demo --write-files "$OUT"
cat <<MSG

Demo ready.
  Rate picks:   make serve, then open http://127.0.0.1:8000/rate/ (user 'demo', password 'demo-rater-password')
  Browse:       http://127.0.0.1:8000/admin/   (same account; demo only)
  API schema:   http://127.0.0.1:8000/api/schema/
  Demo files:   $OUT/exhaustive_data.json, $OUT/ratings.json
MSG
