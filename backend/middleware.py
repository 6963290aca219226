"""Middleware of the web side: request metrics, and a clean 503 while the database is unreachable."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from backend.metrics import REQUEST_SECONDS

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """A request that fails because the database is unreachable (down, restarting, a connection it dropped) gets 503
    with Retry-After, JSON under /api/, instead of a 500 with a traceback. Nothing was stored: Django's transaction
    was rolled back with the connection. The next request opens a new connection, so the service recovers by itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        first_line = (str(exception).strip().splitlines() or [type(exception).__name__])[0]
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, first_line)
        detail = "The database is unreachable; nothing was stored. Retry shortly."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"error": "database_unavailable", "detail": detail}, status=503)
        else:
            response = HttpResponse(detail, status=503, content_type="text/plain")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


class RequestMetricsMiddleware:
    """Each request's latency by view, method and status (Prometheus histogram `ccrl_http_request_duration_seconds`)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match is not None else "unresolved"
        REQUEST_SECONDS.labels(view=view, method=request.method, status=str(response.status_code)).observe(time.perf_counter() - started)
        return response
