"""What the load benchmarks (bench/api_load.py, bench/db_faults.py) and the tests that start gunicorn share: a database
seeded with raters and their API tokens, the app under gunicorn (deploy/gunicorn.conf.py, as `make serve-prod` runs
it), and clients that POST ratings and keep what was acknowledged."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seed_raters(clients: int, scenarios: int = 40) -> tuple[list[str], list[str]]:
    """Migrate Django's database, import a demo without ratings, and make one rater with an API token per client.
    Returns (tokens, entry ids)."""
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from feedback.demo import build_demo
    from feedback.models import Entry
    from feedback.services import feedback_import

    call_command("migrate", verbosity=0)
    data, _ = build_demo(scenario_count=scenarios)
    feedback_import(data, None)
    entry_ids = list(Entry.objects.values_list("external_id", flat=True))
    tokens = [Token.objects.create(user=get_user_model().objects.create_user(f"bench-{i}")).key for i in range(clients)]
    django.db.connections.close_all()
    return tokens, entry_ids


@contextlib.contextmanager
def gunicorn(database_url: str, workers: int, threads: int = 1, probe_token: str = "", extra_env: dict[str, str] | None = None,
             cpus: set[int] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app under gunicorn on a free loopback port (on `cpus` only, when given), up and answering; yields its base
    URL and the master process."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "false",
           "ALLOWED_HOSTS": "127.0.0.1", "WEB_BIND": f"127.0.0.1:{port}", "WEB_WORKERS": str(workers), "WEB_THREADS": str(threads),
           "THROTTLE_RATINGS": "1000000/min", "LOG_LEVEL": "warning", "DB_CONN_MAX_AGE": "60", **(extra_env or {})}
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                               "backend.wsgi:application"], cwd=ROOT, env=env,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/api/widgets/", headers={"Authorization": f"Token {probe_token}"}, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("gunicorn did not come up")
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    acknowledged: dict[tuple[str, str], str] = field(default_factory=dict)
    # Values sent for a key after its last acknowledgement and not acknowledged themselves: a commit whose answer was
    # cut off by the fault may have landed, so the table may hold one of these instead, and nothing acknowledged is lost.
    unacknowledged_since: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, status or error kind)
    wall: float = 0.0


def post_ratings(url: str, tokens: list[str], entry_ids: list[str], seconds: float, seed: int = 1,
                 during: Callable[[float], None] | None = None) -> LoadResult:
    """One thread per token POSTs ratings to `url` for `seconds`; `during(started)` runs alongside (a fault to inject)."""
    import httpx

    result, lock = LoadResult(), threading.Lock()
    started = time.perf_counter()
    deadline = started + seconds

    def note(kind: str) -> None:
        result.statuses[kind] = result.statuses.get(kind, 0) + 1
        result.timeline.append((time.perf_counter() - started, kind))

    def client(index: int) -> None:
        rng = random.Random(seed + index)
        with httpx.Client(headers={"Authorization": f"Token {tokens[index]}"}, timeout=30) as http:
            while time.perf_counter() < deadline:
                entry_id, value = rng.choice(entry_ids), rng.choice(["up", "down"])
                began = time.perf_counter()
                try:
                    response = http.post(url, json={"entry_id": entry_id, "rating": value, "tags": ["bench"], "notes": "load"})
                except httpx.TransportError as exc:
                    with lock:
                        note(type(exc).__name__)
                        result.failures.append(f"transport: {exc}")
                        result.unacknowledged_since.setdefault((f"bench-{index}", entry_id), set()).add(value)
                    time.sleep(0.05)
                    continue
                elapsed = time.perf_counter() - began
                with lock:
                    note(str(response.status_code))
                    key = (f"bench-{index}", entry_id)
                    if response.status_code in (200, 201):
                        result.latencies.append(elapsed)
                        result.acknowledged[key] = value
                        result.unacknowledged_since.pop(key, None)
                    else:
                        result.failures.append(f"{response.status_code} {response.text[:100]}")
                        result.unacknowledged_since.setdefault(key, set()).add(value)
                if response.status_code == 503:
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    if during is not None:
        during(started)
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - started
    return result


def lost(stored: dict[tuple[str, str], str], result: LoadResult) -> int:
    """Acknowledged ratings the table does not hold: missing, or with a value neither acknowledged last nor sent after."""
    return sum(1 for key, value in result.acknowledged.items()
               if stored.get(key) != value and stored.get(key) not in result.unacknowledged_since.get(key, set()))


def lost_ratings(result: LoadResult) -> int:
    """Acknowledged ratings the database does not hold (`lost`), read through Django."""
    from feedback.models import Rating

    stored = {(r.rater.username, r.entry.external_id): r.value for r in Rating.objects.select_related("rater", "entry")}
    return lost(stored, result)


def seed_raters_elsewhere(database_url: str, clients: int, scenarios: int = 40) -> tuple[list[str], list[str]]:
    """`seed_raters` on another database, in a process of its own (this one may be configured for another database)."""
    import json

    script = ("import json, sys, django; django.setup(); from tests.web_load import seed_raters; "
              f"print(json.dumps(seed_raters({clients}, {scenarios})))")
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "backend.settings"}
    output = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    tokens, entry_ids = json.loads(output.strip().splitlines()[-1])
    return tokens, entry_ids


def lost_ratings_in(database_url: str, result: LoadResult) -> int:
    """`lost_ratings`, read with plain SQL from the database at `database_url`."""
    from tests.databases import query_database

    rows = query_database(database_url, "SELECT u.username, e.external_id, r.value FROM feedback_rating r "
                                        "JOIN auth_user u ON u.id = r.rater_id JOIN feedback_entry e ON e.id = r.entry_id")
    stored = {(username, entry): value for username, entry, value in rows}
    return lost(stored, result)


def run_fault(fault: str, *, seconds: float, at: float, down_seconds: float = 3.0, workers: int = 2, clients: int = 8) -> dict:
    """Run one fault under load and report; `ok` is whether every acknowledged rating was stored and no request got a 500."""
    from tests.pg_cluster import PrivateCluster, server_binaries

    binaries = server_binaries()
    if binaries is None:
        raise SystemExit("No PostgreSQL server is installed (bash scripts/postgres.sh installs Debian's).")
    with PrivateCluster(binaries) as cluster:
        tokens, entry_ids = seed_raters_elsewhere(cluster.url, clients)
        events: dict[str, float] = {}
        with gunicorn(cluster.url, workers, probe_token=tokens[0]) as (base, server):
            def inject(started: float) -> None:
                time.sleep(max(0.0, at - (time.perf_counter() - started)))
                events["fault"] = time.perf_counter() - started
                if fault == "restart":
                    cluster.stop()
                    time.sleep(down_seconds)
                    cluster.start()
                else:
                    os.kill(first_worker(server.pid), signal.SIGKILL)
                events["back"] = time.perf_counter() - started

            result = post_ratings(f"{base}/api/feedback/", tokens, entry_ids, seconds, during=inject)
        lost_count = lost_ratings_in(cluster.url, result)
    during = [kind for when, kind in result.timeline if events["fault"] <= when <= events["back"] + 0.5]
    refused = {kind: during.count(kind) for kind in sorted(set(during)) if kind not in ("200", "201")}
    recovered = [when for when, kind in result.timeline if when > events["back"] and kind in ("200", "201")]
    recovery = (min(recovered) - events["back"]) if recovered else float("nan")
    server_errors = result.statuses.get("500", 0)
    lines = [
        f"fault: {fault}{f' ({down_seconds:g} s down)' if fault == 'restart' else ''} at {events['fault']:.1f} s of {result.wall:.1f} s; "
        f"gunicorn {workers} workers, {clients} clients, PostgreSQL (a cluster of its own)",
        f"ratings acknowledged {len(result.acknowledged)} distinct ({len(result.latencies)} requests), stored {len(result.acknowledged) - lost_count}, lost {lost_count}",
        f"all answers by status: {dict(sorted(result.statuses.items()))}",
        f"refused during the fault: {refused or 'none'}",
        f"seconds from the {'database' if fault == 'restart' else 'worker'} being back to the first rating stored: {recovery:.2f}",
        f"500s: {server_errors}",
    ]
    return {"ok": lost_count == 0 and server_errors == 0 and bool(recovered), "lost": lost_count, "statuses": result.statuses, "refused": refused,
            "recovery_seconds": recovery, "lines": lines}


def first_worker(master_pid: int) -> int:
    """A gunicorn worker of `master_pid` (its first child)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if not children:
        raise RuntimeError("gunicorn has no worker to kill")
    return int(children[0])
