"""Fuzzing the API from its own OpenAPI schema with schemathesis, in-process through the WSGI app.

Shared by tests/test_api_fuzz.py (a short run in `make test`) and bench/fuzz_api.py (the long one). Every generated
request is sent and its response checked: no 5xx, the status code documented for the operation, the content type
and the body matching the schema."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    per_operation: Counter = field(default_factory=Counter)


def fuzz_api(app: Any, headers: dict[str, str], max_examples: int, report: FuzzReport | None = None, schema_headers: dict[str, str] | None = None) -> FuzzReport:
    """Send up to `max_examples` generated requests to every operation with `headers` (an auth header or none)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    # As Django's test client does: a request must not close the connection that holds the test's transaction
    # (on PostgreSQL that would end the test database session; SQLite's in-memory database ignores it).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        return _fuzz(app, headers, max_examples, report or FuzzReport(), schema_headers)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _fuzz(app: Any, headers: dict[str, str], max_examples: int, report: FuzzReport, schema_headers: dict[str, str] | None) -> FuzzReport:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.core.failures import FailureGroup
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, response_schema_conformance, status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app, headers=schema_headers or headers)
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def send(case: Any) -> None:
            response = case.call(headers=headers)
            report.cases += 1
            report.per_operation[operation.label] += 1
            report.statuses[response.status_code] += 1
            label = f"{case.method} {case.formatted_path} -> {response.status_code}"
            if response.status_code >= 500:
                report.server_errors.append(f"{label}: {response.text[:200]}")
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (AssertionError, FailureGroup) as failure:  # FailureGroup is a BaseExceptionGroup, not an Exception
                report.violations.append(f"{label}: {str(failure)[:300]}")

        send()
    return report
