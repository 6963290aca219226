"""Load on the rating API over loopback: concurrent raters POST /api/feedback/ for a bounded time against the app
under gunicorn (deploy/gunicorn.conf.py, as `make serve-prod` runs it), on SQLite or PostgreSQL.

Prints ratings/s, p50/p99 latency, errors, and how many acknowledged ratings the database lost (counted against
what was acknowledged; must be 0). Each run uses a database of its own (a SQLite file, or a fresh database on the
PostgreSQL that scripts/postgres.sh starts on loopback), dropped afterwards.

    .venv/bin/python bench/api_load.py --database postgres --workers 3 --clients 16 --seconds 20
    .venv/bin/python bench/api_load.py --database sqlite --workers 3 --clients 16 --seconds 20

--generator wrk drives the same POSTs from Debian's wrk (C, `apt-get install wrk`) with bench/rating_load.lua
instead of Python threads, which would share the two cores with the server; --pin puts gunicorn on CPU 0 and wrk on
CPU 1 (PostgreSQL runs where the system puts it). wrk cannot say which ratings were acknowledged, so the count of
lost ratings comes from the Python generator.

    .venv/bin/python bench/api_load.py --database postgres --generator wrk --workers 2 --clients 16 --seconds 20 --pin
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients, one rater each")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients send (bounded)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--generator", choices=("python", "wrk"), default="python", help="who sends the load (wrk: bench/rating_load.lua)")
    parser.add_argument("--pin", action="store_true", help="gunicorn on CPU 0, the generator on CPU 1 (taskset)")
    parser.add_argument("--raters", type=int, default=64, help="with wrk: raters (API tokens) the requests spread over")
    args = parser.parse_args()

    from tests.databases import throwaway_database

    postgres = None
    if args.database == "postgres":
        postgres = subprocess.run(["bash", str(ROOT / "scripts" / "postgres.sh")], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ccrl-load-") as folder, throwaway_database(postgres, Path(folder), "ccrl_load") as url:
        run(args, url)


def run(args: argparse.Namespace, database_url: str) -> None:
    os.environ.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "backend.settings"})
    import django

    django.setup()
    from tests.web_load import gunicorn, lost_ratings, post_ratings, seed_raters

    tokens, entry_ids = seed_raters(args.raters if args.generator == "wrk" else args.clients)
    print(statements_per_rating(tokens[0], entry_ids[:2]))
    if args.pin:
        os.sched_setaffinity(0, {1})  # this process and the load it sends on CPU 1; gunicorn is moved to CPU 0 below
    with gunicorn(database_url, args.workers, args.threads, probe_token=tokens[0],
                  cpus={0} if args.pin else None) as (base, _server):
        if args.generator == "wrk":
            print(drive_with_wrk(base, tokens, entry_ids, args))
            return
        result = post_ratings(base + "/api/feedback/", tokens, entry_ids, args.seconds, seed=args.seed)
    lost = lost_ratings(result)
    latencies = sorted(result.latencies)
    wall = result.wall
    print(f"gunicorn {args.workers} workers x {args.threads} threads, {args.clients} clients, {wall:.1f} s, database {django.db.connection.vendor}")
    print(f"ratings acknowledged  {len(latencies)}  ({len(latencies) / wall:.1f} ratings/s)")
    if latencies:
        print(f"latency p50 {statistics.median(latencies) * 1000:.1f} ms   p99 {latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000:.1f} ms")
    print(f"errors {len(result.failures)}{'  first: ' + result.failures[0] if result.failures else ''}")
    print(f"ratings lost {lost} (of {len(result.acknowledged)} distinct rater/entry ratings acknowledged)")
    sys.exit(1 if lost else 0)


def drive_with_wrk(base: str, tokens: list[str], entry_ids: list[str], args: argparse.Namespace) -> str:
    """wrk's summary line for `args.seconds` of rating POSTs over `args.clients` connections (2 wrk threads)."""
    import shutil

    from feedback.models import Rating

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as data:
        data.write("tokens = {" + ", ".join(f'"{t}"' for t in tokens) + "}\nentries = {" + ", ".join(f'"{e}"' for e in entry_ids) + "}\n")
    before = Rating.objects.count()
    command = ["wrk", "-t2", f"-c{args.clients}", f"-d{args.seconds:g}s", "--latency", "-s", str(ROOT / "bench" / "rating_load.lua"), base]
    output = subprocess.run(command, env={**os.environ, "CCRL_WRK_DATA": data.name}, capture_output=True, text=True, check=True).stdout
    os.unlink(data.name)
    summary = [line for line in output.splitlines() if line.startswith("wrk:")]
    return (f"gunicorn {args.workers} workers x {args.threads} threads, wrk {args.clients} connections over {len(tokens)} raters, "
            f"database {connection_vendor()}{', pinned: gunicorn CPU 0, wrk CPU 1' if args.pin else ''}\n"
            + "\n".join(summary) + f"\nratings in the table: {before} before, {Rating.objects.count()} after")


def statements_per_rating(token: str, entry_ids: list[str]) -> str:
    """The SQL statements of one new rating and of one changed rating through the API, in this process (as a worker
    runs it: token authentication, the throttle's cache, the rating)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    counts = []
    for value in ("up", "down"):  # a new rating, then a change of it
        with CaptureQueriesContext(connection) as queries:
            response = client.post("/api/feedback/", {"entry_id": entry_ids[0], "rating": value}, content_type="application/json")
        counts.append(f"{len(queries.captured_queries)} ({response.status_code})")
    return f"SQL statements per rating, new / changed: {' / '.join(counts)} (including BEGIN and COMMIT where the driver sends them)"


def connection_vendor() -> str:
    import django.db

    return django.db.connection.vendor


if __name__ == "__main__":
    main()
