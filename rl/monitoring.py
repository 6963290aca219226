"""What an operator watches (the Django face of rl, for backend/metrics.py): the online learner's state as
Prometheus metrics read from the database at each scrape, and whether the serving engine answers (/readyz)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily


def serving_engine_problem() -> str:
    """Why picks cannot be served now ('' when the configured engine answers its model list)."""
    import httpx

    from rl.core.config import serving_config

    config = serving_config()
    url = config.engine_url().rstrip("/")
    probe = f"{url}/models" if config.api == "openai" else f"{url}/api/tags"
    try:
        response = httpx.get(probe, timeout=2.0)
    except httpx.HTTPError as exc:
        return f"serving engine ({config.engine}) unreachable at {url}: {type(exc).__name__}"
    return "" if response.status_code == 200 else f"serving engine ({config.engine}) at {url} answered HTTP {response.status_code}"


class OnlineLearningCollector:
    """Gauges of the online learner and the live model, from the database at scrape time."""

    def collect(self) -> Iterator[Any]:
        from rl.deploy.registry import live_version
        from rl.loop.buffer import buffer_times
        from rl.models import OnlineRun

        database_up = GaugeMetricFamily("ccrl_database_up", "1 when the database answered this scrape's questions.")
        try:
            buffer = len(buffer_times())
            last = OnlineRun.objects.order_by("-started_at").first()
            running = OnlineRun.objects.filter(status=OnlineRun.Status.RUNNING).count()
            live = live_version()
        except DatabaseError:
            database_up.add_metric([], 0)
            yield database_up
            return
        database_up.add_metric([], 1)
        yield database_up
        yield GaugeMetricFamily("ccrl_online_buffer_ratings", "Usable ratings given or changed since the last run trained (the online learner's buffer).", value=buffer)
        yield GaugeMetricFamily("ccrl_online_runs_running", "Online learner runs running now (at most 1).", value=running)
        if last is not None:
            info = GaugeMetricFamily("ccrl_online_last_run_info", "The newest online learner run: its status, stage and outcome (value 1).",
                                     labels=["status", "stage", "outcome"])
            info.add_metric([last.status, last.stage or "", last.outcome or ""], 1)
            yield info
            yield GaugeMetricFamily("ccrl_online_last_run_started_timestamp_seconds", "When the newest online learner run started.",
                                    value=last.started_at.timestamp())
            if last.finished_at is not None:
                yield GaugeMetricFamily("ccrl_online_last_run_finished_timestamp_seconds", "When the newest finished online learner run ended.",
                                        value=last.finished_at.timestamp())
        live_info = GaugeMetricFamily("ccrl_live_model_info", "The live model version (value 1; absent when nothing is live).",
                                      labels=["model_version", "engine"])
        if live is not None:
            live_info.add_metric([live.ollama_name, live.engine or ""], 1)
        yield live_info
