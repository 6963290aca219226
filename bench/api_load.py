"""Load on the rating API over loopback: concurrent clients POST /api/feedback/ for a bounded time.

Prints ratings/s, p50/p99 latency and how many acknowledged ratings the database lost (must be 0).
Runs against its own temporary SQLite database (or DATABASE_URL if set), served by Django's threaded WSGI server.

    .venv/bin/python bench/api_load.py --clients 8 --seconds 20
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, one rater each")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients send (bounded)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="ccrl-bench-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir}/bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "backend.settings"
    import django

    django.setup()
    import httpx
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application
    from rest_framework.authtoken.models import Token

    from feedback.demo import build_demo
    from feedback.models import Entry, Rating
    from feedback.services import feedback_import

    call_command("migrate", verbosity=0)
    data, _ = build_demo(scenario_count=40)
    feedback_import(data, None)
    entry_ids = list(Entry.objects.values_list("external_id", flat=True))
    tokens = [Token.objects.create(user=get_user_model().objects.create_user(f"bench-{i}")).key for i in range(args.clients)]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *a) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
    server.set_app(get_wsgi_application())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/feedback/"

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
                response = http.post(url, json={"entry_id": entry_id, "rating": value, "tags": ["bench"], "notes": "load"})
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
    wall = time.perf_counter() - began
    server.shutdown()

    stored = {(r.rater.username, r.entry.external_id): r.value for r in Rating.objects.select_related("rater", "entry")}
    lost = sum(1 for key, value in acknowledged.items() if stored.get(key) != value)
    latencies.sort()
    print(f"clients {args.clients}, {wall:.1f} s, database {django.db.connection.vendor}")
    print(f"ratings acknowledged  {len(latencies)}  ({len(latencies) / wall:.1f} ratings/s)")
    print(f"latency p50 {statistics.median(latencies) * 1000:.1f} ms   p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms")
    print(f"errors {len(failures)}{'  first: ' + failures[0] if failures else ''}")
    print(f"ratings lost {lost}")
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()
