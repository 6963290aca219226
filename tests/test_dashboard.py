"""The staff dashboard (/runs/): what staff see, in Django's client and in a real headless Chromium; who is refused."""
import json
import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Entry, Rating
from rl.dashboard import metric_curves
from rl.models import ModelVersion, OnlineRun, TrainingRun

CHROMIUM = os.environ.get("CHROMIUM_PATH", shutil.which("chromium") or "/usr/bin/chromium")


def evaluation(base_widget: float, tuned_widget: float) -> dict:
    def metrics(widget):
        return {"constrained_widget_accuracy": widget, "constrained_fixture_accuracy": 0.5, "preference_accuracy": 0.7,
                "constrained_valid_pick_rate": 1.0, "constrained_n_scenarios": 20, "n_pairs": 40,
                "constrained_collapse_warnings": ["gauge is 40% of answers but right for 10% of questions (more than 2x its share)"] if widget > 0.5 else []}
    return {"data": {}, "base": metrics(base_widget), "tuned": metrics(tuned_widget)}


def make_loop_records(tmp_path: Path) -> tuple:
    """A finished training run with logged steps and evaluations, two versions (one live, one rejected by its gate),
    an online run, and ratings of served entries."""
    run_dir = tmp_path / "run-a"
    run_dir.mkdir()
    lines = [{"step": s, "loss": 0.7 - s * 0.05, "rewards/accuracies": 0.4 + s * 0.05} for s in range(1, 9)]
    lines.append({"step": 8, "eval_loss": 0.45, "eval_rewards/accuracies": 0.8})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    run = TrainingRun.objects.create(name="run-a", status="succeeded", preset="cpu", algo="dpo", base_model="smollm2", run_dir=str(run_dir),
                                     evaluation={"held_out": evaluation(0.3, 0.45), "natural": evaluation(0.2, 0.6)})
    live = ModelVersion.objects.create(name="cc-widget-selector", tag="run-a", status="active", quantization="q4_k_m", export_dir="",
                                       gguf_path="", training_run=run, gate={"passed": True, "reasons": ["held_out: widget 0.450 >= 0.320: ok"]})
    rejected = ModelVersion.objects.create(name="cc-widget-selector", tag="run-b", status="exported", quantization="q4_k_m", export_dir="",
                                           gguf_path="", gate={"passed": False, "reasons": ["natural: constrained_widget_accuracy 0.100 < 0.620: too low"]})
    OnlineRun.objects.create(status="succeeded", outcome="rejected", watermark=run.started_at, heartbeat_at=run.started_at,
                             gate={"passed": False, "live_model": "live cc-widget-selector:run-a", "reasons": ["flipped: too low"]})
    rater = get_user_model().objects.create_user("dash-rater")
    for index, entry in enumerate(Entry.objects.order_by("external_id")[:5]):
        entry.model_version = live.ollama_name
        entry.save()
        entry.ratings.all().delete()
        Rating.objects.create(entry=entry, rater=rater, value="up" if index < 4 else "down")
    return run, live, rejected


@pytest.fixture
def loop_records(demo_db, tmp_path):
    return make_loop_records(tmp_path)


def test_metric_curves_read_train_and_eval_steps(loop_records):
    run, _, _ = loop_records
    curves = metric_curves(run.run_dir)
    assert [step for step, _ in curves["loss"]["train"]] == list(range(1, 9))
    assert curves["reward accuracy"]["eval"] == [(8, 0.8)]
    assert metric_curves(Path(run.run_dir) / "missing") == {"loss": {}, "reward accuracy": {}}


def test_staff_see_runs_evaluations_versions_gates_learner_and_up_rates(loop_records, admin_client):
    page = admin_client.get("/runs/").content.decode()
    assert 'data-run="run-a"' in page and page.count('class="series"') >= 4  # loss and reward curves, train and eval
    assert 'data-set="held_out"' in page and 'data-set="natural"' in page and "0.600" in page and "gauge is 40% of answers" in page
    assert 'class="version live" data-version="cc-widget-selector:run-a"' in page and "LIVE" in page
    assert "natural: constrained_widget_accuracy 0.100 &lt; 0.620: too low" in page
    assert "flipped: too low" in page
    assert "80% of 5 (95% CI 38% to 96%)" in page and 'class="rate"' in page
    assert 'id="buffer"' in page and "that trigger a retrain" in page


def test_staff_see_the_a_b_arm_and_every_deployment_decision_with_its_numbers(loop_records, admin_client):
    from rl.models import Deployment

    _, live, candidate = loop_records
    candidate.status, candidate.ab_share = ModelVersion.Status.REGISTERED, 0.25
    candidate.save()
    Deployment.objects.create(version=candidate, previous=live, action=Deployment.Action.AB_START, alias="", ollama_host="", by="online_learn",
                              reason="A/B arm at 25% of requests")
    page = admin_client.get("/runs/").content.decode()
    assert "cc-widget-selector:run-b answers 0.25 of requests until the evidence decides" in page
    Deployment.objects.create(version=candidate, previous=live, action=Deployment.Action.AB_RETIRE, alias="", ollama_host="", by="online_learn",
                              reason="A/B: 12/60 up against 30/60; one-sided Fisher exact p(worse) = 0.0004: retire")
    ModelVersion.objects.filter(pk=candidate.pk).update(ab_share=0.0)
    page = admin_client.get("/runs/").content.decode()
    assert 'data-action="ab_retire"' in page and "A/B arm retired" in page and "p(worse) = 0.0004: retire" in page
    assert page.index('data-action="ab_retire"') < page.index('data-action="ab_start"')  # newest first
    assert '<dd id="ab">off</dd>' in page


def test_the_dashboard_is_refused_to_raters_and_sends_anonymous_users_to_log_in(loop_records, client):
    response = client.get("/runs/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    client.force_login(get_user_model().objects.create_user("plain-rater"))
    assert client.get("/runs/").status_code == 403


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_in_chromium_for_staff_a_rater_and_anonymous(live_server, demo_files, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from feedback.services import feedback_import

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    feedback_import(*demo_files)
    make_loop_records(tmp_path)
    users = get_user_model().objects
    users.create_user("stella", password="stella-password-123", is_staff=True)
    users.create_user("rita", password="rita-password-123")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page()
        page.goto(f"{live_server.url}/runs/")
        assert "/accounts/login/" in page.url  # anonymous: sent to log in
        for username, expected in (("rita", 403), ("stella", 200)):
            page.context.clear_cookies()
            page.goto(f"{live_server.url}/accounts/login/?next=/runs/")
            page.fill("#id_username", username)
            page.fill("#id_password", f"{username}-password-123")
            with page.expect_navigation():
                page.click("button[type=submit]")
            response = page.goto(f"{live_server.url}/runs/")
            assert response.status == expected, username
        assert page.locator("tr.version.live").get_attribute("data-version") == "cc-widget-selector:run-a"
        curves = page.locator("article.run[data-run='run-a'] svg.line-chart polyline.series")
        assert curves.count() >= 2 and all(curves.nth(i).bounding_box()["width"] > 100 for i in range(curves.count()))
        assert page.locator("#up-rates circle.rate").count() == 1
        page.locator("tr.version:not(.live) details summary").click()
        assert page.locator("tr.version:not(.live) details li").first.is_visible()
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        browser.close()
