"""An evaluation's fixture answers against the retriever's top k: where the model follows BM25's order, where it
overrules it, and whether rightly (rl/evaluation/retriever_agreement.py; docs/training-recipe.md, rounds nine and ten).

Reads evaluation files as `evaluate_model` writes them (every answer is kept since 2026-12-05) and the data and
ratings files each names. No model runs.

    .venv/bin/python bench/retriever_agreement.py rl_checkpoints/RUN/evaluation-natural.json
    .venv/bin/python bench/retriever_agreement.py rl_checkpoints/A/evaluation-natural.json rl_checkpoints/B/evaluation-natural.json --model base
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluation_files", nargs="+", type=Path, help="evaluate_model's JSON output (e.g. rl_checkpoints/RUN/evaluation-natural.json)")
    parser.add_argument("--model", choices=("tuned", "base"), default="tuned", help="whose answers to count (default: the tuned model's)")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    from rl.data.snapshot import load_snapshot
    from rl.evaluation.evalset import right_picks
    from rl.evaluation.retriever_agreement import retriever_agreement

    for path in args.evaluation_files:
        results = json.loads(path.read_text())
        data, scored = results["data"], results.get(args.model)
        answers = (scored or {}).get("constrained_answers") or (scored or {}).get("answers")
        if not data.get("data_file") or not answers:
            sys.exit(f"{path}: no data file named or no {args.model} answers kept (evaluation files before 2026-12-05 kept five).")
        snapshot = load_snapshot("file", data["data_file"], data["ratings_file"])
        agreement = retriever_agreement(answers, right_picks(snapshot, set(snapshot.scenarios)), snapshot.catalog, snapshot.scenarios)
        print(f"{path} ({args.model}, {agreement.answers} answers; the retriever's top k is right for {agreement.retriever_accuracy:.1%})")
        for label, count in agreement.rows():
            print(f"  {label:60s} {count:4d}")


if __name__ == "__main__":
    main()
