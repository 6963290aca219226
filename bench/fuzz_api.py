"""Fuzz the whole API from its OpenAPI schema with schemathesis (a benchmark, not a test): as a signed-in rater and
as anonymous, in-process through the WSGI app, on a demo database of its own. Prints the cases sent, the status codes
seen, server errors and schema violations (both must be 0).

    .venv/bin/python bench/fuzz_api.py --rater-examples 60 --anonymous-examples 20
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rater-examples", type=int, default=60, help="generated requests per operation as a rater")
    parser.add_argument("--anonymous-examples", type=int, default=20, help="generated requests per operation without credentials")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ccrl-fuzz-"))
    os.environ.update({"DJANGO_SETTINGS_MODULE": "backend.settings", "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}"})
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from rest_framework.authtoken.models import Token

    from feedback.demo import build_demo
    from feedback.services import feedback_import
    from feedback.throttling import WriteRateThrottle
    from tests.api_fuzz import FuzzReport, fuzz_api

    call_command("migrate", verbosity=0)
    feedback_import(*build_demo(seed=5, scenario_count=24))
    WriteRateThrottle.THROTTLE_RATES = {scope: "100000/min" for scope in WriteRateThrottle.THROTTLE_RATES}  # fuzz the API, not the limiter
    rater = get_user_model().objects.create_user("fuzz-rater")
    auth = {"Authorization": f"Token {Token.objects.create(user=rater).key}"}
    app = get_wsgi_application()
    for role, headers, examples in (("rater", auth, args.rater_examples), ("anonymous", {}, args.anonymous_examples)):
        started = time.time()
        report = fuzz_api(app, headers, examples, FuzzReport(), schema_headers=auth)
        print(f"{role}: {report.cases} requests over {len(report.per_operation)} operations in {time.time() - started:.0f} s; "
              f"statuses {dict(sorted(report.statuses.items()))}; server errors {len(report.server_errors)}; "
              f"schema violations {len(report.violations)}")
        for line in (report.server_errors + report.violations)[:10]:
            print("  ", line)


if __name__ == "__main__":
    main()
