"""A running online run's heartbeat: `heartbeat_at` written every few seconds, so a run whose process died is noticed."""
from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import connection

logger = logging.getLogger(__name__)


class Heartbeat:
    """Writes `heartbeat_at` of a running OnlineRun every few seconds from a background thread."""

    def __init__(self, run_id: int, seconds: float):
        self.run_id, self.seconds = run_id, seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"online-run-{run_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        from rl.models import OnlineRun

        try:
            while not self.stopped.wait(self.seconds):
                try:
                    OnlineRun.beat(self.run_id)
                except Exception as exc:  # a missed beat is not fatal; many in a row make the run look dead
                    logger.warning("Heartbeat of online run %s not written: %s", self.run_id, exc)
        finally:
            connection.close()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
