import json

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Rating


@pytest.fixture
def admin_client_logged_in(client, demo_db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "root-password-123")
    client.force_login(admin)
    return client


def test_the_admin_exports_selected_ratings_in_the_ratings_file_format(admin_client_logged_in):
    chosen = list(Rating.objects.order_by("id").values_list("id", flat=True)[:5])
    response = admin_client_logged_in.post(
        "/admin/feedback/rating/", {"action": "export_ratings_json", "_selected_action": chosen}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    payload = json.loads(response.content)
    assert payload["format_version"] == 1
    exported = {(r["entry_id"], r["rater"]) for r in payload["ratings"]}
    expected = {(r.entry.external_id, r.rater.username) for r in Rating.objects.filter(id__in=chosen)}
    assert exported == expected


def test_the_admin_filters_ratings_by_tag_and_searches_notes(admin_client_logged_in):
    rating = Rating.objects.filter(value="down").first()
    rating.tags = ["wrong_fixture"]
    rating.notes = "shows the wrong chiller entirely"
    rating.save()
    by_tag = admin_client_logged_in.get("/admin/feedback/rating/", {"tag": "wrong_fixture"})
    assert by_tag.status_code == 200
    assert by_tag.context["cl"].result_count == 1
    by_search = admin_client_logged_in.get("/admin/feedback/rating/", {"q": "wrong chiller"})
    assert by_search.context["cl"].result_count == 1


def test_the_admin_shows_an_entry_with_its_ratings_inline(admin_client_logged_in):
    rating = Rating.objects.first()
    response = admin_client_logged_in.get(f"/admin/feedback/entry/{rating.entry_id}/change/")
    assert response.status_code == 200
    assert rating.rater.username in response.content.decode()


def test_the_admin_lists_online_runs_deployments_and_gate_results(admin_client_logged_in):
    from django.utils import timezone

    from rl.models import Deployment, ModelVersion, OnlineRun

    version = ModelVersion.objects.create(name="cc-widget-selector", tag="run-x", quantization="q4_k_m", export_dir="x", gguf_path="x",
                                          status="active", gate={"passed": True, "reasons": ["ok"]})
    Deployment.objects.create(version=version, action="activate", alias="cc-widget-selector:live", ollama_host="h", by="ann")
    failed = OnlineRun.objects.create(status="failed", stage="train", watermark=timezone.now(), heartbeat_at=timezone.now(), error="boom at train")
    OnlineRun.objects.create(status="succeeded", outcome="rejected", watermark=timezone.now(), heartbeat_at=timezone.now())
    runs = admin_client_logged_in.get("/admin/rl/onlinerun/?status__exact=failed")
    deployments = admin_client_logged_in.get("/admin/rl/deployment/")
    versions = admin_client_logged_in.get("/admin/rl/modelversion/")
    assert runs.status_code == deployments.status_code == versions.status_code == 200
    assert [run.pk for run in runs.context["cl"].result_list] == [failed.pk]  # the filter keeps the failed run only
    assert admin_client_logged_in.get("/admin/rl/onlinerun/").context["cl"].result_count == 2
    assert b"cc-widget-selector:run-x" in deployments.content
    assert b"passed gate" in versions.content.lower() and b"icon-yes" in versions.content


def test_the_admin_trusts_and_untrusts_raters_and_untrusted_ratings_leave_training(admin_client_logged_in):
    from feedback.models import RaterProfile
    from feedback.selectors import usable_ratings

    profile = RaterProfile.objects.get(user__username=Rating.objects.first().rater.username)
    theirs = Rating.objects.filter(rater=profile.user).count()
    usable, others = usable_ratings().count(), usable_ratings().exclude(rater=profile.user).count()
    assert theirs > 0 and profile.trusted and others < usable
    response = admin_client_logged_in.post("/admin/feedback/raterprofile/", {"action": "untrust_raters", "_selected_action": [profile.pk]})
    assert response.status_code == 302
    profile.refresh_from_db()
    assert not profile.trusted and usable_ratings().count() == others
    assert Rating.objects.filter(rater=profile.user).count() == theirs  # kept, only left out
    admin_client_logged_in.post("/admin/feedback/raterprofile/", {"action": "trust_raters", "_selected_action": [profile.pk]})
    profile.refresh_from_db()
    assert profile.trusted and usable_ratings().count() == usable


def test_the_admin_filters_ratings_by_value_widget_source_and_rater(admin_client_logged_in):
    listed = lambda query: admin_client_logged_in.get("/admin/feedback/rating/", query).context["cl"].result_count  # noqa: E731
    first = Rating.objects.select_related("entry__widget", "rater").first()
    assert listed({"value__exact": "down"}) == Rating.objects.filter(value="down").count() < Rating.objects.count()
    assert listed({"entry__widget__id__exact": first.entry.widget_id}) == Rating.objects.filter(entry__widget=first.entry.widget).count()
    assert listed({"entry__source__exact": first.entry.source}) == Rating.objects.filter(entry__source=first.entry.source).count()
    assert listed({"rater__id__exact": first.rater_id}) == Rating.objects.filter(rater=first.rater).count()
    assert listed({"value__exact": "down", "entry__widget__id__exact": first.entry.widget_id}) == \
        Rating.objects.filter(value="down", entry__widget=first.entry.widget).count()


def test_the_admin_lists_each_pick_s_confidence_and_sorts_by_it(admin_client_logged_in):
    from feedback.models import Entry

    entry = Entry.objects.order_by("external_id").last()  # last in the default order: on the list's second page
    Entry.objects.update(confidence=0.5)
    Entry.objects.filter(pk=entry.pk).update(confidence=0.034, model_version="cc-widget-selector:run-a")
    page = admin_client_logged_in.get("/admin/feedback/entry/?o=6").content.decode()  # by confidence, lowest first
    assert "cc-widget-selector:run-a" in page
    assert page.index(entry.external_id) < page.index(">3%<") < page.index(">50%<")


def test_the_admin_shows_a_version_s_gate_decision_in_words(admin_client_logged_in):
    from rl.deploy.gates import PairedRule, gate_decision_paired
    from rl.models import ModelVersion

    n = 30
    decision = gate_decision_paired({"natural": {"widget": [1] * 12 + [0] * 18, "fixture": [1] * n, "valid": [1] * n, "preference": []}},
                                    {"natural": {"widget": [0] * 12 + [0] * 18, "fixture": [1] * n, "valid": [1] * n, "preference": []}},
                                    PairedRule())
    version = ModelVersion.objects.create(name="cc-widget-selector", tag="run-a", quantization="q4_k_m", export_dir="", gguf_path="",
                                          gate=decision.as_dict())
    page = admin_client_logged_in.get(f"/admin/rl/modelversion/{version.pk}/change/").content.decode()
    assert "passed (paired rule)" in page and "candidate right where live was wrong on 12 items, the reverse on 0 (of 30)" in page
