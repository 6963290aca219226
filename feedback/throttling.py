"""Rate limits on the API's writes, per account (or per address when anonymous), with rates from settings.

Reads are not throttled, nor is the rating UI (a person rating at human speed sends a few requests a minute).
A throttled request gets 429 with a Retry-After header and a body saying when to retry.
The counts live in Django's cache: per process with the default local-memory cache, so with several web workers
set CACHES to a shared cache (Redis, database) for one limit across them.
"""
from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView


class WriteRateThrottle(ScopedRateThrottle):
    """The view's `throttle_scope` rate, for writes only."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)
