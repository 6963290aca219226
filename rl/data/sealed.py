"""The sealed part of the natural set (`evalsets/natural-sealed/`): hand-written questions that no decision sees.

No gate, no best-checkpoint choice, no recipe ablation may read it; only `evaluate_model --natural sealed` and the
demo's report (which runs that command) do, so the figure it gives is one nothing was tuned on. import-linter's
`sealed` contract keeps every other module from importing this one, and tests/test_sealed_set.py checks that no other
code names its folder.
"""
from rl.data.evalsets import DATA_FILE, EVALSETS_DIR, QUESTIONS_FILE, RATINGS_FILE

SEALED_DIR = EVALSETS_DIR / "natural-sealed"
SEALED_QUESTIONS = SEALED_DIR / QUESTIONS_FILE
SEALED_DATA_FILE = SEALED_DIR / DATA_FILE
SEALED_RATINGS_FILE = SEALED_DIR / RATINGS_FILE
