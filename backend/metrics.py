"""Prometheus metrics of the web side, and `/metrics`, `/healthz`, `/readyz`.

Metrics are kept with `prometheus_client`. Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR to an
empty folder (deploy/gunicorn.conf.py clears it at start and marks dead workers), so one scrape adds up every worker.
The metrics defined elsewhere: `feedback/metrics.py` (ratings stored), `rl/serving/metrics.py` (picks served, serving
errors); the online learner's state is read from the database at each scrape (`rl/monitoring.py`).
"""
from __future__ import annotations

import os

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest

REQUEST_SECONDS = Histogram("ccrl_http_request_duration_seconds", "Web request latency by view, method and status.",
                            ["view", "method", "status"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


_migrations_applied = False  # once seen applied, this process's code never needs another: only the SELECT is repeated


def database_problem() -> str:
    """Why the database cannot serve: unreachable, or migrations not applied; '' when it can."""
    global _migrations_applied
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not _migrations_applied:
            executor = MigrationExecutor(connection)
            unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
            if unapplied:
                return f"{len(unapplied)} migration(s) not applied"
            _migrations_applied = True
    except Exception as exc:  # noqa: BLE001 - any failure to reach the database is "not healthy", said in the answer
        return f"database unreachable: {type(exc).__name__}"
    return ""


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for a load balancer: the database answers and every migration is applied. No auth, no data."""
    problem = database_problem()
    return JsonResponse({"status": "unhealthy" if problem else "ok", **({"problem": problem} if problem else {})},
                        status=503 if problem else 200)


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: healthy, and the serving engine answers (picks can be served)."""
    from rl.monitoring import serving_engine_problem

    problem = database_problem() or serving_engine_problem()
    return JsonResponse({"status": "not ready" if problem else "ready", **({"problem": problem} if problem else {})},
                        status=503 if problem else 200)


def metrics(request: HttpRequest) -> HttpResponse:
    """Every metric in Prometheus' text format (with METRICS_TOKEN set, only for `Authorization: Bearer <token>`)."""
    import feedback.metrics  # noqa: F401 - registers the rating metrics before the first rating
    import rl.serving.metrics  # noqa: F401 - the same for serving
    from rl.monitoring import OnlineLearningCollector

    if settings.METRICS_TOKEN and request.headers.get("Authorization") != f"Bearer {settings.METRICS_TOKEN}":
        return HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    registry.register(OnlineLearningCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Default:
    """The process's own metrics (prometheus_client's default registry), inside a per-scrape registry."""

    def collect(self):  # noqa: ANN201 - prometheus_client's collector interface
        return REGISTRY.collect()
