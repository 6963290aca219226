"""A short schemathesis run over the whole API, as anonymous and as a signed-in rater (bench/fuzz_api.py: long)."""
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tests.api_fuzz import fuzz_api


@pytest.mark.django_db
def test_fuzzing_the_api_finds_no_server_error_and_no_answer_outside_the_schema(demo_db):
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()

    rater = get_user_model().objects.create_user("fuzz-rater")
    auth = {"Authorization": f"Token {Token.objects.create(user=rater).key}"}
    report = fuzz_api(application, auth, max_examples=12)
    fuzz_api(application, {}, max_examples=4, report=report, schema_headers=auth)
    assert report.cases >= 100, report
    assert not report.server_errors, report.server_errors[:5]
    assert not report.violations, report.violations[:5]
    assert {200, 400, 401, 403, 404} <= set(report.statuses), report.statuses  # it reached every kind of answer
