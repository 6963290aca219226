"""Faults under load (a benchmark, not a test): raters POST ratings to the app under gunicorn on a PostgreSQL of its
own (tests/pg_cluster.py: Debian's server, initdb in a temporary folder) while (1) the database restarts, or (2) a
gunicorn worker is killed mid-request.

Printed: ratings acknowledged during the run and stored after it (they must be equal: nothing acknowledged is lost),
requests refused during the outage and with what status (a clean 503, never a 500), and the seconds from the
database answering again to the first rating stored after it (the service recovers by itself).

    .venv/bin/python bench/db_faults.py --fault restart --down-seconds 3 --seconds 20
    .venv/bin/python bench/db_faults.py --fault kill-worker --seconds 15
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=("restart", "kill-worker"), default="restart")
    parser.add_argument("--down-seconds", type=float, default=3.0, help="how long the database stays down (restart)")
    parser.add_argument("--at", type=float, default=5.0, help="seconds into the run when the fault happens")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients send")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    from tests.web_load import run_fault

    report = run_fault(args.fault, seconds=args.seconds, at=args.at, down_seconds=args.down_seconds, workers=args.workers, clients=args.clients)
    for line in report["lines"]:
        print(line)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
