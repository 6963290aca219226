"""Production: health and readiness, Prometheus metrics, login lockout, a clean 503 while the database is gone, and
throttle counts shared by web processes."""
import os
import subprocess
import sys

import httpx
import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.db import OperationalError
from prometheus_client import REGISTRY

from feedback.models import Entry, Rating
from tests.conftest import closed_port_url


def test_healthz_answers_ok_with_the_database_up_and_migrated(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_says_so_when_migrations_are_missing(client, db, monkeypatch):
    import backend.metrics

    monkeypatch.setattr(backend.metrics, "_migrations_applied", False)
    monkeypatch.setattr("django.db.migrations.executor.MigrationExecutor.migration_plan", lambda self, targets: [("app", False)])
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json() == {"status": "unhealthy", "problem": "1 migration(s) not applied"}


def test_readyz_needs_the_serving_engine(client, db, settings, simulated_ollama):
    settings.RL_SERVING, settings.OLLAMA_HOST = {}, closed_port_url()
    down = client.get("/readyz")
    assert down.status_code == 503 and "serving engine (ollama) unreachable" in down.json()["problem"]
    settings.OLLAMA_HOST = simulated_ollama.url
    assert client.get("/readyz").json() == {"status": "ready"}


def test_metrics_count_ratings_requests_picks_and_show_the_learner(client, api, served_versions, settings,
                                                                  django_capture_on_commit_callbacks):
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ups, picks = value("ccrl_ratings_stored_total", value="up"), value("ccrl_picks_served_total", model_version="cc-widget-selector:live-one", arm="live")
    entry = Entry.objects.first()
    with django_capture_on_commit_callbacks(execute=True):  # counted once committed
        assert api.post("/api/feedback/", {"entry_id": entry.external_id, "rating": "up"}, format="json").status_code == 201
    from feedback.models import Scenario
    from rl.serving.picks import pick_widget

    pick_widget(Scenario(query="is AHU-2 running?", site=entry.scenario.site))
    text = client.get("/metrics").content.decode()
    assert value("ccrl_ratings_stored_total", value="up") == ups + 1
    assert value("ccrl_picks_served_total", model_version="cc-widget-selector:live-one", arm="live") == picks + 1
    assert 'ccrl_http_request_duration_seconds_count{method="POST",status="201",view="api-feedback"}' in text
    assert "ccrl_online_buffer_ratings" in text and 'ccrl_live_model_info{engine="",model_version="cc-widget-selector:live-one"} 1.0' in text
    assert "ccrl_database_up 1.0" in text and "ccrl_pick_seconds_bucket" in text


def test_a_serving_error_is_counted_by_its_code(served_versions, settings):
    from feedback.models import Scenario
    from rl.serving.errors import EngineDown
    from rl.serving.picks import pick_widget

    before = REGISTRY.get_sample_value("ccrl_serving_errors_total", {"code": "engine_unavailable"}) or 0.0
    settings.OLLAMA_HOST = closed_port_url()
    with pytest.raises(EngineDown):
        pick_widget(Scenario(query="is AHU-2 running?", site=Scenario.objects.first().site))
    assert REGISTRY.get_sample_value("ccrl_serving_errors_total", {"code": "engine_unavailable"}) == before + 1


def test_metrics_need_the_token_when_one_is_set(client, db, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_the_database_going_away_mid_request_is_a_clean_503_and_nothing_is_stored(api, demo_db, monkeypatch):
    def database_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr("feedback.api.feedback_submit", database_gone)
    before = Rating.objects.count()
    response = api.post("/api/feedback/", {"entry_id": Entry.objects.first().external_id, "rating": "up"}, format="json")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response.json()["error"] == "database_unavailable" and Rating.objects.count() == before


def login(client, password: str, address: str = "10.0.0.7"):
    return client.post("/accounts/login/", {"username": "alice", "password": password}, REMOTE_ADDR=address)


def test_five_wrong_passwords_lock_the_account_at_that_address_until_an_admin_unlocks_it(client, rater, admin_client, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for attempt in range(4):
        response = login(client, "wrong-password")
        assert response.status_code == 200 and "Wrong username or password" in response.content.decode(), attempt
    locked = login(client, "wrong-password")
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    right_but_locked = login(client, "alice-password-123")
    assert right_but_locked.status_code == 429 and "_auth_user_id" not in client.session
    assert login(client, "alice-password-123", address="10.0.0.8").status_code == 302  # another address is not locked
    client.logout()
    attempt = AccessAttempt.objects.get(username="alice", ip_address="10.0.0.7")
    listing = admin_client.get("/admin/axes/accessattempt/").content.decode()
    assert "alice" in listing
    assert admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}).status_code == 302
    assert login(client, "alice-password-123").status_code == 302 and client.session["_auth_user_id"] == str(rater.pk)


def test_the_admin_login_is_locked_out_too(client, db):
    get_user_model().objects.create_superuser("root", "root@example.com", "root-password-123")
    for _ in range(5):
        client.post("/admin/login/", {"username": "root", "password": "nope"}, REMOTE_ADDR="10.0.0.9")
    response = client.post("/admin/login/", {"username": "root", "password": "root-password-123"}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 429


@pytest.mark.database_processes
def test_two_web_processes_share_one_throttle_count(process_database_url):
    from tests.web_load import gunicorn, seed_raters_elsewhere

    tokens, entry_ids = seed_raters_elsewhere(process_database_url, clients=1, scenarios=6)
    limit = {"THROTTLE_RATINGS": "4/min"}
    with gunicorn(process_database_url, 1, probe_token=tokens[0], extra_env=limit) as (first, _), \
            gunicorn(process_database_url, 1, probe_token=tokens[0], extra_env=limit) as (second, _):
        statuses = [httpx.post(f"{base}/api/feedback/", json={"entry_id": entry, "rating": "up"}, timeout=30,
                               headers={"Authorization": f"Token {tokens[0]}"}).status_code
                    for base, entry in zip([first, first, second, second, second, first], entry_ids)]
    # a count per process would let the second server take three
    assert statuses == [201, 201, 201, 201, 429, 429]


def postgres_cluster_or_skip():
    from tests.pg_cluster import server_binaries

    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server installed (make test's PostgreSQL pass installs Debian's)")
    return binaries


@pytest.mark.database_processes
def test_ratings_during_a_database_restart_get_a_clean_503_and_every_acknowledged_one_is_stored():
    from tests.web_load import run_fault

    postgres_cluster_or_skip()
    report = run_fault("restart", seconds=7, at=2, down_seconds=1.5, workers=2, clients=3)
    assert report["lost"] == 0 and "500" not in report["statuses"], report["lines"]
    assert report["refused"].get("503", 0) > 0 and set(report["refused"]) <= {"503"}, report["lines"]
    assert report["recovery_seconds"] < 3, report["lines"]


@pytest.mark.database_processes
def test_a_killed_web_worker_loses_no_acknowledged_rating():
    from tests.web_load import run_fault

    postgres_cluster_or_skip()
    report = run_fault("kill-worker", seconds=5, at=2, workers=2, clients=3)
    assert report["lost"] == 0 and "500" not in report["statuses"] and report["recovery_seconds"] < 3, report["lines"]


LEARNER_SCRIPT = """
import sys, time, django
django.setup()
from django.core.management import call_command
from django.utils import timezone
from rl.loop.heartbeat import Heartbeat
from rl.models import OnlineRun, replace_broken_connection
call_command("migrate", verbosity=0)
run = OnlineRun.claim(watermark=timezone.now(), buffer_size=1, forced=True, worker="test")
with Heartbeat(run.pk, 0.2):
    print("claimed", flush=True)
    sys.stdin.readline()  # the test restarts the database meanwhile
    time.sleep(1.0)  # beats after the restart
    replace_broken_connection()
    print("beat", OnlineRun.objects.get(pk=run.pk).heartbeat_at.timestamp(), flush=True)
    print("stage", run.enter_stage("gate"), flush=True)
    print("finish", run.finish("rejected"), flush=True)
"""


@pytest.mark.database_processes
def test_the_online_learner_s_claim_survives_a_database_restart_mid_run():
    from tests.databases import query_database
    from tests.pg_cluster import PrivateCluster

    with PrivateCluster(postgres_cluster_or_skip()) as cluster:
        env = {**os.environ, "DATABASE_URL": cluster.url, "DJANGO_SETTINGS_MODULE": "backend.settings", "DB_CONN_MAX_AGE": "600"}
        learner = subprocess.Popen([sys.executable, "-c", LEARNER_SCRIPT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        assert learner.stdout.readline().strip() == "claimed"
        cluster.restart(down_seconds=1.0)
        restarted = query_database(cluster.url, "SELECT now()")[0][0]
        learner.stdin.write("go\n")
        learner.stdin.flush()
        output, _ = learner.communicate(timeout=60)
        runs = query_database(cluster.url, "SELECT status, outcome, stage, heartbeat_at FROM rl_onlinerun")
    words = output.split()
    assert words[0] == "beat" and words[2:] == ["stage", "True", "finish", "True"], output
    assert float(words[1]) > restarted.timestamp()  # the heartbeat thread wrote after the restart: it reconnected
    assert len(runs) == 1 and runs[0][:3] == ("succeeded", "rejected", "gate")


def test_health_and_metrics_answer_over_plain_http_behind_the_https_redirect(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.get("/rate/").status_code == 301  # everything else goes to HTTPS
