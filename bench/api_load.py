"""Load on the rating API over loopback: concurrent raters POST /api/feedback/ for a bounded time against the app
under gunicorn (deploy/gunicorn.conf.py, as `make serve-prod` runs it), on SQLite or PostgreSQL.

Prints ratings/s, p50/p99 latency, errors, and how many acknowledged ratings the database lost (counted against
what was acknowledged; must be 0). Each run uses a database of its own (a SQLite file, or a fresh database on the
PostgreSQL that scripts/postgres.sh starts on loopback), dropped afterwards.

    .venv/bin/python bench/api_load.py --database postgres --workers 3 --clients 16 --seconds 20
    .venv/bin/python bench/api_load.py --database sqlite --workers 3 --clients 16 --seconds 20
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
    import httpx
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from feedback.demo import build_demo
    from feedback.models import Entry, Rating
    from feedback.services import feedback_import

    call_command("migrate", verbosity=0)
    data, _ = build_demo(scenario_count=40)
    feedback_import(data, None)
    entry_ids = list(Entry.objects.values_list("external_id", flat=True))
    tokens = [Token.objects.create(user=get_user_model().objects.create_user(f"bench-{i}")).key for i in range(args.clients)]
    django.db.connections.close_all()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "false", "ALLOWED_HOSTS": "127.0.0.1",
           "WEB_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": str(args.workers), "WEB_THREADS": str(args.threads),
           "THROTTLE_RATINGS": "1000000/min", "LOG_LEVEL": "warning", "DB_CONN_MAX_AGE": "60"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                               "backend.wsgi:application"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/api/widgets/", headers={"Authorization": f"Token {tokens[0]}"}, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("gunicorn did not come up")
        latencies, acknowledged, failures, wall = drive(base + "/api/feedback/", tokens, entry_ids, args)
    finally:
        server.terminate()
        server.wait(timeout=30)

    stored = {(r.rater.username, r.entry.external_id): r.value for r in Rating.objects.select_related("rater", "entry")}
    lost = sum(1 for key, value in acknowledged.items() if stored.get(key) != value)
    latencies.sort()
    print(f"gunicorn {args.workers} workers x {args.threads} threads, {args.clients} clients, {wall:.1f} s, database {django.db.connection.vendor}")
    print(f"ratings acknowledged  {len(latencies)}  ({len(latencies) / wall:.1f} ratings/s)")
    if latencies:
        print(f"latency p50 {statistics.median(latencies) * 1000:.1f} ms   p99 {latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000:.1f} ms")
    print(f"errors {len(failures)}{'  first: ' + failures[0] if failures else ''}")
    print(f"ratings lost {lost} (of {len(acknowledged)} distinct rater/entry ratings acknowledged)")
    sys.exit(1 if lost else 0)


def drive(url: str, tokens: list[str], entry_ids: list[str], args: argparse.Namespace):
    import httpx

    latencies: list[float] = []
    acknowledged: dict[tuple[str, str], str] = {}
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + args.seconds

    def client(index: int) -> None:
        rng = random.Random(args.seed + index)
        with httpx.Client(headers={"Authorization": f"Token {tokens[index]}"}, timeout=30) as http:
            while time.perf_counter() < deadline:
                entry_id, value = rng.choice(entry_ids), rng.choice(["up", "down"])
                began = time.perf_counter()
                try:
                    response = http.post(url, json={"entry_id": entry_id, "rating": value, "tags": ["bench"], "notes": "load"})
                except httpx.TransportError as exc:
                    with lock:
                        failures.append(f"transport: {exc}")
                    continue
                elapsed = time.perf_counter() - began
                with lock:
                    if response.status_code in (200, 201):
                        latencies.append(elapsed)
                        acknowledged[(f"bench-{index}", entry_id)] = value
                    else:
                        failures.append(f"{response.status_code} {response.text[:100]}")

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, acknowledged, failures, time.perf_counter() - began


if __name__ == "__main__":
    main()
