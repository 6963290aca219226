"""Do the tests catch a broken version? (a check, not a test): each mutation in bench/mutations.json replaces a snippet
of the code with a deliberately wrong one, runs the tests named for it, and restores the file. A mutation the tests
still pass on is MISSED: those tests do not prove what their names say.

    .venv/bin/python bench/mutation_check.py                      # every mutation (about 3 minutes on 2 cores)
    .venv/bin/python bench/mutation_check.py --only "kto: KL estimate left out"
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(mutation: dict) -> tuple[bool, str]:
    """(caught, pytest's last line) for one mutation; the files are restored whatever happens."""
    originals: dict[Path, str] = {}
    try:
        for name, old, new in mutation["edits"]:
            path = ROOT / name
            text = path.read_text()
            originals.setdefault(path, text)
            if text.count(old) != 1:
                raise SystemExit(f"{mutation['name']}: the snippet to replace is in {name} {text.count(old)} times, not once; update bench/mutations.json")
            path.write_text(text.replace(old, new))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation["tests"]],
                                cwd=ROOT, capture_output=True, text=True, timeout=1800)
    finally:
        for path, text in originals.items():
            path.write_text(text)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode != 0, lines[-1] if lines else result.stderr.strip()[-200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default=str(ROOT / "bench" / "mutations.json"), help="The mutations: name, edits [file, old, new], tests.")
    parser.add_argument("--only", action="append", default=[], help="Run only the mutation of this name (repeatable).")
    args = parser.parse_args()
    mutations = [m for m in json.loads(Path(args.spec).read_text()) if not args.only or m["name"] in args.only]
    missed = 0
    for mutation in mutations:
        caught, last = run(mutation)
        missed += not caught
        print(f"{'CAUGHT' if caught else 'MISSED'}  {mutation['name']}: {last}", flush=True)
    print(f"{len(mutations) - missed} of {len(mutations)} mutations caught")


if __name__ == "__main__":
    main()
