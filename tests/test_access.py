"""Who may do what: the auth matrix over every endpoint, untrusted raters, throttling, production settings."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from feedback.models import Entry, RaterProfile, Rating

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("anonymous", "rater", "app", "staff")


@pytest.fixture
def clients(demo_db):
    users = get_user_model().objects
    rater = users.create_user("matrix-rater")
    app = users.create_user("matrix-app")
    app.user_permissions.add(Permission.objects.get(codename="add_entry", content_type__app_label="feedback"))
    staff = users.create_user("matrix-staff", is_staff=True)
    result = {"anonymous": APIClient()}
    for role, user in (("rater", rater), ("app", app), ("staff", staff)):
        result[role] = APIClient()
        result[role].force_authenticate(user)
    other = users.create_user("matrix-other")
    entry = Entry.objects.order_by("external_id").first()
    result["mine"] = Rating.objects.create(entry=entry, rater=rater, value="up").pk
    result["theirs"] = Rating.objects.create(entry=entry, rater=other, value="down").pk
    result["entry"] = entry
    return result


def _entry_body(n):
    return {"id": f"matrix-{n}", "scenario": "s001", "widget": "kpi_card", "fixtures": ["hq_main_meter_kw"]}


# (method, path, body, expected status for anonymous, rater, production app, staff)
# 503 for the app's pick: it may ask, and no model is live here. Staff are not the production app: no add_entry.
MATRIX = [
    ("get", "/api/widgets/", None, 401, 200, 200, 200),
    ("get", "/api/widgets/kpi_card/", None, 401, 200, 200, 200),
    ("post", "/api/widgets/", {"slug": "x"}, 401, 405, 405, 405),
    ("get", "/api/fixtures/", None, 401, 200, 200, 200),
    ("get", "/api/scenarios/", None, 401, 200, 200, 200),
    ("get", "/api/scenarios/s001/", None, 401, 200, 200, 200),
    ("delete", "/api/scenarios/s001/", None, 401, 405, 405, 405),
    ("get", "/api/entries/", None, 401, 200, 200, 200),
    ("get", "/api/entries/{entry}/", None, 401, 200, 200, 200),
    ("post", "/api/entries/", "entry", 401, 403, 201, 403),
    ("delete", "/api/entries/{entry}/", None, 401, 403, 403, 403),
    ("get", "/api/ratings/", None, 401, 200, 200, 200),
    ("get", "/api/ratings/{mine}/", None, 401, 200, 404, 404),
    ("get", "/api/ratings/{theirs}/", None, 401, 404, 404, 404),
    ("patch", "/api/ratings/{mine}/", {"rating": "down"}, 401, 200, 404, 404),
    ("patch", "/api/ratings/{theirs}/", {"rating": "up"}, 401, 404, 404, 404),
    ("delete", "/api/ratings/{mine}/", None, 401, 405, 405, 405),
    ("post", "/api/ratings/", "rating", 401, 200, 201, 201),
    ("post", "/api/feedback/", "rating", 401, 200, 201, 201),
    ("post", "/api/picks/", {"query": "is AHU-2 running?"}, 401, 403, 503, 403),
    ("get", "/api/schema/", None, 401, 200, 200, 200),
    ("get", "/api/docs/", None, 401, 200, 200, 200),
    ("get", "/runs/", None, 302, 403, 403, 200),
    ("get", "/admin/", None, 302, 302, 302, 200),
]


def database_state() -> tuple:
    """Everything an API write could change: every rating as stored, every entry, scenario and user."""
    from feedback.models import Scenario

    ratings = sorted((r.pk, r.entry_id, r.rater_id, r.value, tuple(r.tags), r.notes, r.corrected_widget_id,
                      tuple(sorted(r.corrected_fixtures.values_list("pk", flat=True))), r.updated_at) for r in Rating.objects.all())
    entries = sorted(Entry.objects.values_list("pk", "external_id", "widget_id", "title", "model_version"))
    return ratings, entries, sorted(Scenario.objects.values_list("pk", flat=True)), sorted(get_user_model().objects.values_list("pk", flat=True))


@pytest.mark.parametrize("method, path, body, expected", [(m, p, b, tuple(e)) for m, p, b, *e in MATRIX],
                         ids=[f"{m.upper()} {p}" for m, p, *_ in MATRIX])
def test_the_auth_matrix(clients, method, path, body, expected):
    entry = clients["entry"]
    url = path.format(entry=entry.external_id, mine=clients["mine"], theirs=clients["theirs"])
    for role, status in zip(ROLES, expected):
        payload = _entry_body(role) if body == "entry" else {"entry_id": entry.external_id, "rating": "up"} if body == "rating" else body
        client = clients[role]
        if url.startswith(("/runs/", "/admin/")):
            client = django_client_for(client)
        before = database_state()
        response = getattr(client, method)(url, payload, format="json") if payload is not None and not url.startswith(("/runs/", "/admin/")) \
            else getattr(client, method)(url)
        assert response.status_code == status, f"{role}: {method.upper()} {url} -> {response.status_code}, expected {status}"
        if method != "get" and status in (302, 401, 403, 404, 405):
            assert database_state() == before, f"{role}: a refused {method.upper()} {url} changed the database"


def django_client_for(api_client: APIClient):
    """The same user on Django's test client (the dashboard and admin are pages with session login)."""
    from django.test import Client

    client = Client()
    user = api_client.handler._force_user
    if user is not None:
        client.force_login(user)
    return client


def test_an_untrusted_rater_s_votes_change_no_pair(demo_db):
    from rl.data.data_formatter import format_preferences
    from rl.data.snapshot import load_snapshot_from_db

    def pairs():
        snapshot = load_snapshot_from_db()
        formatted = format_preferences(snapshot.entries, snapshot.scenarios, snapshot.catalog)
        return sorted((row["scenario_id"], str(row["chosen"]), str(row["rejected"])) for row in formatted.pairs)

    before = pairs()
    mallory = get_user_model().objects.create_user("mallory")
    RaterProfile.objects.filter(user=mallory).update(trusted=False)
    for entry in Entry.objects.prefetch_related("ratings")[:60]:
        verdict = entry.ratings.first().value
        Rating.objects.create(entry=entry, rater=mallory, value="down" if verdict == "up" else "up")
    assert pairs() == before
    assert Rating.objects.filter(rater=mallory).count() == 60  # kept and visible, only not used
    trusted_again = RaterProfile.objects.get(user=mallory)
    trusted_again.trusted = True
    trusted_again.save()
    assert pairs() != before  # the same votes from a trusted rater do change pairs: the test can fail


def test_new_accounts_start_as_the_setting_says(db, settings):
    settings.RL_NEW_RATERS_TRUSTED = False
    assert get_user_model().objects.create_user("newcomer").rater_profile.trusted is False
    settings.RL_NEW_RATERS_TRUSTED = True
    assert get_user_model().objects.create_user("welcome").rater_profile.trusted is True


def test_the_admin_shows_each_rater_s_agreement_with_the_majority(demo_db, admin_client):
    from feedback.selectors import rater_agreement

    users = get_user_model().objects
    careful, careless = users.create_user("careful"), users.create_user("careless")
    entries = list(Entry.objects.prefetch_related("ratings")[:20])
    for entry in entries:
        majority = entry.ratings.first().value
        Rating.objects.create(entry=entry, rater=careful, value=majority)
        Rating.objects.create(entry=entry, rater=careless, value="down" if majority == "up" else "up")
    agreement = rater_agreement([careful.pk, careless.pk])
    assert agreement[careful.pk].rate > 0.9 and agreement[careless.pk].rate < 0.1
    page = admin_client.get("/admin/feedback/raterprofile/").content.decode()
    assert "agreement with majority" in page.lower() and f"{agreement[careful.pk]}" in page


# Each throttled write: (scope in settings, method, path, body for the n-th request). A pick answers 503 here (nothing
# is live), after the throttle let it through; the throttle counts it all the same.
THROTTLED = [
    ("ratings", "post", "/api/feedback/", lambda c, n: {"entry_id": c["entry"].external_id, "rating": ("up", "down")[n % 2]}),
    ("ratings", "post", "/api/ratings/", lambda c, n: {"entry_id": c["entry"].external_id, "rating": ("up", "down")[n % 2]}),
    ("ratings", "patch", "/api/ratings/{mine}/", lambda c, n: {"rating": ("up", "down")[n % 2], "notes": f"take {n}"}),
    ("entries", "post", "/api/entries/", lambda c, n: _entry_body(f"throttle-{n}")),
    ("picks", "post", "/api/picks/", lambda c, n: {"query": f"is AHU-{n} running?"}),
]


@pytest.mark.parametrize("scope, method, path, body", THROTTLED, ids=[f"{m.upper()} {p}" for _, m, p, _ in THROTTLED])
def test_every_throttled_write_stops_at_the_settings_rate_writes_nothing_then_and_spares_other_accounts(clients, settings, scope, method, path, body):
    from django.core.cache import cache

    cache.clear()
    allowed, _, period = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].partition("/")
    assert period.startswith("m")
    users = get_user_model().objects
    first, second = users.get(username="matrix-app"), users.create_user("matrix-app-2")
    second.user_permissions.add(Permission.objects.get(codename="add_entry", content_type__app_label="feedback"))
    api, other = clients["app"], APIClient()
    other.force_authenticate(second)
    # each account writes its own URL: a PATCH goes to a rating of its own
    url = {user: path.format(mine=Rating.objects.create(entry=clients["entry"], rater=user, value="up").pk if "{mine}" in path else "")
           for user in (first, second)}
    for n in range(int(allowed)):
        response = getattr(api, method)(url[first], body(clients, n), format="json")
        assert response.status_code != 429, f"request {n + 1} of {allowed} was throttled"
    before = database_state()
    blocked = getattr(api, method)(url[first], body(clients, int(allowed) + 1), format="json")
    assert blocked.status_code == 429 and 0 < int(blocked["Retry-After"]) <= 60 and "available in" in blocked.json()["detail"]
    assert database_state() == before, "the throttled request wrote"
    assert api.get("/api/ratings/").status_code == 200  # reads are not throttled
    assert getattr(other, method)(url[second], body(clients, 0), format="json").status_code != 429, \
        "another account was throttled by the first one's writes"


def test_the_rating_ui_is_not_throttled(clients, client, settings):
    from django.core.cache import cache

    cache.clear()
    allowed = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["ratings"].split("/")[0])
    client.force_login(get_user_model().objects.get(username="matrix-rater"))
    entries = list(Entry.objects.order_by("external_id"))
    for n in range(allowed + 5):  # more than the API would allow in a minute
        assert client.post(f"/rate/entry/{entries[n % len(entries)].external_id}/", {"rating": ("up", "down")[n % 2]}).status_code == 302


def _run(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_the_web_server_refuses_the_development_key_when_not_in_debug():
    refused = _run("import backend.wsgi", DEBUG="false")
    assert refused.returncode != 0 and "SECRET_KEY is not set" in refused.stderr
    assert _run("import backend.wsgi", DEBUG="true").returncode == 0
    assert _run("import backend.wsgi", DEBUG="false", SECRET_KEY="x" * 60).returncode == 0
    assert _run("import backend.asgi", DEBUG="false").returncode != 0


def test_check_deploy_is_clean_with_the_documented_production_settings():
    production = dict(line.split("=", 1) for line in (ROOT / "deploy" / "production.env.example").read_text().splitlines()
                      if line and not line.startswith("#"))
    checked = _run("import sys; from django.core.management import execute_from_command_line; "
                   "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
                   DJANGO_SETTINGS_MODULE="backend.settings", **production)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no issues" in checked.stdout
    development = _run("from django.core.management import execute_from_command_line; "
                       "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
                       DJANGO_SETTINGS_MODULE="backend.settings")
    assert development.returncode != 0 and "security.W009" in development.stderr + development.stdout


def test_the_api_schema_generates_without_warnings():
    generated = _run("from django.core.management import execute_from_command_line; "
                     "execute_from_command_line(['manage.py', 'spectacular', '--validate', '--fail-on-warn', '--file', '/dev/null'])",
                     DJANGO_SETTINGS_MODULE="backend.settings")
    assert generated.returncode == 0, generated.stderr
