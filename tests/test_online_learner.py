"""The online learner on the demo database and a tiny model: buffer, claims, heartbeats, gates, deployment with a
SIMULATED Ollama."""
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from feedback.models import Entry, RaterProfile, Rating
from feedback.validation import FeedbackValidationError
from rl.loop.online_learner import OnlineLearner, init_online_learner
from rl.loop.stages import ExitCode
from rl.models import Deployment, ModelVersion, OnlineRun, TrainingRun
from tests.conftest import closed_port_url
from tests.rl_cases import FAST

ALIAS = "cc-widget-selector:live"
# Small and fast: gate on 3 held-out scenarios with short answers; a heartbeat that never fires in-process.
QUICK = dict(min_samples_to_retrain=1, gate_sets="held_out", gate_eval_limit=3, max_new_tokens=24, heartbeat_seconds=3600,
             stale_after_minutes=180, verify_pick=False, quantization="q8_0", auto_export=False)
PERMISSIVE = dict(gate_rule="margins", gate_min_widget_gain=-1.0, gate_fixture_tolerance=1.0, gate_preference_tolerance=1.0, gate_min_valid_rate=0.0)


@pytest.fixture
def online(demo_db, tiny_model_dir, checkpoints, settings):
    settings.ENABLE_ONLINE_LEARNING = True
    settings.RL_TRAINING_OVERRIDES = {"base_model": str(tiny_model_dir), **FAST, "max_steps": 2, "eval_fraction": 0.5}
    settings.RL_ONLINE_LEARNING = {}
    return settings


def learner(**overrides) -> OnlineLearner:
    return init_online_learner(**{**QUICK, **overrides})


def some_entry() -> Entry:
    return Entry.objects.order_by("external_id").first()


# ----- add_feedback ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("feedback, field", [
    ("up", "feedback"),
    ({"entry_id": "nope", "rating": "up"}, "entry_id"),
    ({"rating": "up"}, "entry_id"),
    ({"entry_id": "ENTRY", "rating": "sideways"}, "rating"),
    ({"entry_id": "ENTRY", "rating": "up", "tags": "x" * 60}, "tags"),
    ({"entry_id": "ENTRY", "rating": "up", "notes": 5}, "notes"),
    ({"entry_id": "ENTRY", "rating": "up", "corrected_widget": "hologram"}, "corrected_widget"),
    ({"entry_id": "ENTRY", "rating": "up", "score": 5}, "score"),
])
def test_add_feedback_with_bad_input_raises_naming_the_field_and_stores_nothing(demo_db, feedback, field):
    if isinstance(feedback, dict) and feedback.get("entry_id") == "ENTRY":
        feedback = {**feedback, "entry_id": some_entry().external_id}
    ratings, users = Rating.objects.count(), get_user_model().objects.count()
    with pytest.raises(FeedbackValidationError) as error:
        OnlineLearner().add_feedback(feedback)
    assert error.value.field == field
    assert Rating.objects.count() == ratings and get_user_model().objects.count() == users


def test_add_feedback_stores_a_rating_through_the_service_and_rating_again_updates_it(demo_db):
    learner_ = OnlineLearner()
    entry = some_entry()
    rating = learner_.add_feedback({"entry_id": entry.external_id, "rating": "up", "tags": ["good"], "notes": "Perfect widget choice"})
    assert (rating.rater.username, rating.value, rating.tags) == ("command-center", "up", ["good"])
    again = learner_.add_feedback({"entry_id": entry.external_id, "rating": "down", "tags": [], "notes": ""})
    assert again.pk == rating.pk and Rating.objects.get(pk=rating.pk).value == "down"


# ----- the buffer --------------------------------------------------------------------------------------------------
def test_the_buffer_counts_usable_ratings_after_the_watermark_and_survives_restarts(demo_db):
    usable = [r for r in Rating.objects.select_related("rater__rater_profile") if "low_confidence" not in r.tags]
    assert OnlineLearner().buffer_size() == len(usable) > 0
    OnlineRun.objects.create(status="succeeded", watermark=timezone.now(), trained_at=timezone.now(), heartbeat_at=timezone.now())
    assert init_online_learner().buffer_size() == 0  # a new learner object (a restart) reads the same buffer
    entry = some_entry()
    OnlineLearner().add_feedback({"entry_id": entry.external_id, "rating": "up"})
    OnlineLearner().add_feedback({"entry_id": entry.external_id, "rating": "up", "tags": ["low_confidence"]}, rater="bob")
    untrusted = get_user_model().objects.create(username="mallory")
    RaterProfile.objects.update_or_create(user=untrusted, defaults={"trusted": False})
    OnlineLearner().add_feedback({"entry_id": entry.external_id, "rating": "down"}, rater=untrusted)
    status = init_online_learner(min_samples=1).get_status()
    assert status["buffer_size"] == 1 and status["min_samples"] == 1
    assert status["enabled"] is False and status["should_retrain"] is False  # ENABLE_ONLINE_LEARNING is off


def test_max_buffer_size_moves_the_runs_watermark_back_and_the_rest_waits(online):
    learner_ = learner(min_samples_to_retrain=5, max_buffer_size=5)
    times = learner_.buffer_times()
    run, _ = learner_._claim(forced=False)
    assert run.buffer_size == 5 and run.watermark == times[4]
    OnlineRun.objects.filter(pk=run.pk).update(status="succeeded", trained_at=timezone.now())
    assert learner_.buffer_size() == len(times) - 5 - sum(t == times[4] for t in times[5:])


# ----- runs, claims, heartbeats ------------------------------------------------------------------------------------
def test_feedback_arriving_during_a_run_lands_in_the_next_buffer_once(online, monkeypatch):
    import rl.loop.stages

    learner_ = learner(**PERMISSIVE)
    before = learner_.buffer_size()
    entry = some_entry()
    real_run_training = rl.loop.stages.run_training

    def run_training_while_feedback_arrives(*args, **kwargs):
        learner_.add_feedback({"entry_id": entry.external_id, "rating": "down", "notes": "arrived mid-run"}, rater="late-rater")
        return real_run_training(*args, **kwargs)

    monkeypatch.setattr(rl.loop.stages, "run_training", run_training_while_feedback_arrives)
    result = learner_.tick()
    assert result.exit_code == ExitCode.OK, result.message
    run = OnlineRun.objects.get()
    assert run.buffer_size == before and run.trained_at is not None and run.outcome == "trained"
    late = Rating.objects.get(rater__username="late-rater")
    assert late.updated_at > run.watermark
    assert learner_.buffer_times() == [late.updated_at]  # in the next buffer, exactly once
    newest_used = TrainingRun.objects.get().data_source["stats"]["newest_rating_at"]
    assert newest_used < late.updated_at.isoformat()  # and not trained on by this run


def test_a_second_claim_while_one_runs_does_nothing(online):
    learner_ = learner()
    running, _ = learner_._claim(forced=False)
    result = learner_.tick()
    assert result.action == "busy" and f"run {running.pk}" in result.message and result.exit_code == ExitCode.OK
    assert OnlineRun.objects.count() == 1 and not TrainingRun.objects.exists()


def test_a_run_whose_heartbeat_stopped_is_marked_failed_and_the_next_tick_starts_anew(online):
    learner_ = learner()
    dead = OnlineRun.objects.create(watermark=timezone.now(), heartbeat_at=timezone.now() - timedelta(hours=4), stage="train")
    result = learner_.tick()
    dead.refresh_from_db()
    assert dead.status == "failed" and "No heartbeat since" in dead.error and "process died" in dead.error
    fresh = OnlineRun.objects.exclude(pk=dead.pk).get()
    assert result.run_id == fresh.pk and fresh.status == "succeeded" and TrainingRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_keeps_a_running_run_fresh():
    import time

    from rl.loop.heartbeat import Heartbeat

    stamp = timezone.now() - timedelta(hours=1)
    run = OnlineRun.objects.create(watermark=timezone.now(), heartbeat_at=stamp)
    with Heartbeat(run.pk, 0.05):
        time.sleep(0.4)
    run.refresh_from_db()
    assert run.heartbeat_at > stamp + timedelta(minutes=59)


def test_a_failed_stage_fails_the_run_with_exit_code_1_and_keeps_the_buffer(online, settings):
    settings.RL_TRAINING_OVERRIDES = {**settings.RL_TRAINING_OVERRIDES, "min_samples": 100_000}
    learner_ = learner()
    before = learner_.buffer_size()
    result = learner_.tick()
    run = OnlineRun.objects.get()
    assert result.exit_code == ExitCode.FAILED and run.status == "failed" and run.stage == "train"
    assert "Too few preference pairs" in run.error
    assert learner_.buffer_size() == before  # nothing was trained, so nothing left the buffer


# ----- gate, export, deploy, Ollama down ---------------------------------------------------------------------------
def test_the_loop_deploys_what_passes_keeps_live_what_fails_and_retries_a_pending_deploy(online, simulated_ollama, settings):
    settings.OLLAMA_HOST = simulated_ollama.url
    entry = some_entry()

    first = learner(auto_export=True, auto_deploy=True, **PERMISSIVE).tick()
    assert first.action == "deployed", first.message
    live = ModelVersion.objects.get(status="active")
    assert simulated_ollama.models[ALIAS]["digest"] == f"sha256:{live.sha256}"
    gate = OnlineRun.objects.get(pk=first.run_id).gate
    assert gate["passed"] and gate["live_model"].startswith("the base model") and "held_out" in gate["candidate"]

    # Ollama down at deploy time: the candidate is exported, not deployed; the previous model stays live.
    OnlineLearner().add_feedback({"entry_id": entry.external_id, "rating": "up"}, rater="r1")
    settings.OLLAMA_HOST = closed_port_url()
    second = learner(auto_export=True, auto_deploy=True, warm_start_learning_rate_scale=0.5, **PERMISSIVE).tick()
    assert second.exit_code == ExitCode.DEPLOY_PENDING and second.action == "deploy_pending"
    candidate = ModelVersion.objects.get(online_runs__pk=second.run_id)
    assert candidate.pending_deploy and candidate.status == "exported"
    # Retrained from the live model's adapter, the ratings since the first run's watermark first.
    first_run, second_run = OnlineRun.objects.get(pk=first.run_id), OnlineRun.objects.get(pk=second.run_id)
    assert first_run.training_run.config["init_adapter"] == ""
    assert second_run.training_run.config["init_adapter"] == live.training_run.adapter_dir
    assert second_run.training_run.config["learning_rate"] == pytest.approx(first_run.training_run.config["learning_rate"] / 2)
    assert second_run.training_run.data_source["rated_since"] == first_run.watermark.isoformat()
    assert ModelVersion.objects.get(status="active") == live
    assert simulated_ollama.models[ALIAS]["digest"] == f"sha256:{live.sha256}"
    with pytest.raises(CommandError) as failed:  # cron sees exit code 75 while Ollama stays down
        call_command("online_learn", "--set", "min_samples_to_retrain=1", "--set", "auto_deploy=true")
    assert failed.value.returncode == ExitCode.DEPLOY_PENDING and TrainingRun.objects.count() == 2

    # Ollama back: the next tick deploys the pending candidate and has nothing else to do.
    settings.OLLAMA_HOST = simulated_ollama.url
    third = learner(auto_export=True, auto_deploy=True, **PERMISSIVE).tick()
    assert third.action == "nothing_due", third.message
    candidate.refresh_from_db()
    assert candidate.status == "active" and not candidate.pending_deploy
    assert simulated_ollama.models[ALIAS]["digest"] == f"sha256:{candidate.sha256}"
    assert OnlineRun.objects.get(pk=second.run_id).outcome == "deployed"

    # A candidate that does not beat the live model by the margin is rejected with its reasons; the live one stays.
    OnlineLearner().add_feedback({"entry_id": entry.external_id, "rating": "down"}, rater="r2")
    fourth = learner(auto_export=True, auto_deploy=True, gate_rule="margins", gate_min_widget_gain=1.01, warm_start=False).tick()
    assert fourth.action == "rejected" and fourth.exit_code == ExitCode.OK
    run = OnlineRun.objects.get(pk=fourth.run_id)
    assert run.training_run.config["init_adapter"] == ""
    assert run.outcome == "rejected" and run.model_version is None and not run.gate["passed"]
    assert run.gate["live_model"] == f"live {candidate.ollama_name}"
    assert any("constrained_widget_accuracy" in reason and "too low" in reason for reason in run.gate["reasons"])
    assert ModelVersion.objects.get(status="active") == candidate
    assert simulated_ollama.models[ALIAS]["digest"] == f"sha256:{candidate.sha256}"
    assert ModelVersion.objects.filter(status="active").count() == 1


def test_online_learn_command_status_dry_run_and_disabled(online, capsys, settings):
    import json

    call_command("online_learn", "--status", "--set", "min_samples_to_retrain=1")
    status = json.loads(capsys.readouterr().out)
    assert status["should_retrain"] is True and status["active_model"] is None and status["buffer_size"] > 0
    call_command("online_learn", "--dry-run", "--set", "min_samples_to_retrain=1")
    assert "would retrain" in capsys.readouterr().out and not OnlineRun.objects.exists()
    settings.ENABLE_ONLINE_LEARNING = False
    call_command("online_learn")
    assert "Online learning is off" in capsys.readouterr().out and not OnlineRun.objects.exists()
    with pytest.raises(CommandError, match="--set expects FIELD=VALUE"):
        call_command("online_learn", "--set", "min_samples=3")
    with pytest.raises(CommandError, match="max_buffer_size at least"):
        call_command("online_learn", "--set", "min_samples_to_retrain=50", "--set", "max_buffer_size=10")
    with pytest.raises(CommandError, match=r"warm_start_learning_rate_scale must be in \(0, 1\]"):
        call_command("online_learn", "--set", "warm_start_learning_rate_scale=0")


def test_force_retrains_when_nothing_is_due_and_force_deploy_records_the_person_who_overrode_the_gate(online, simulated_ollama, settings, monkeypatch):
    settings.OLLAMA_HOST = simulated_ollama.url
    settings.ENABLE_ONLINE_LEARNING = False  # --force is a person's flag: it runs even so
    monkeypatch.setattr("getpass.getuser", lambda: "ops-person")
    flags = [f"--set={k}={v}" for k, v in {**QUICK, "min_samples_to_retrain": 100_000, "max_buffer_size": 100_000,
                                            "gate_rule": "margins", "gate_min_widget_gain": 1.01, "warm_start": False}.items()]
    call_command("online_learn", *flags)  # not due, and off: nothing
    assert not OnlineRun.objects.exists()

    call_command("online_learn", "--force", "--force-deploy", *flags)
    run = OnlineRun.objects.get()
    assert run.forced and run.outcome == "deployed" and run.gate["passed"] is False and run.gate["forced_by"] == "ops-person"
    live = ModelVersion.objects.get(status="active")
    assert live == run.model_version and live.gate["forced_by"] == "ops-person"
    assert Deployment.objects.get(version=live).by == "online_learn (forced by ops-person)"
    assert simulated_ollama.models[ALIAS]["digest"] == f"sha256:{live.sha256}"
