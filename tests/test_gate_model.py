"""`manage.py gate_model`: the deploy gate for a run trained by hand (the demo's), with a SIMULATED Ollama."""
from contextlib import nullcontext

import pytest
from django.core.management import CommandError, call_command

from rl.models import Deployment, ModelVersion

QUICK = ["--set", "gate_sets=held_out", "--set", "gate_eval_limit=2", "--set", "max_new_tokens=24", "--set", "verify_pick=false"]
# The plumbing tests force the decision through the margins rule; the paired rule has tests of its own.
MARGINS = ["--set", "gate_rule=margins"]
PERMISSIVE = [*MARGINS, "--set", "gate_min_widget_gain=-1", "--set", "gate_fixture_tolerance=1", "--set", "gate_preference_tolerance=1",
              "--set", "gate_min_valid_rate=0"]


def test_the_gate_reuses_scores_evaluate_model_made_on_the_same_data(tiny_run, monkeypatch, capsys):
    from rl.evaluation.evaluation_run import evaluate_model

    evaluate_model(checkpoint="tiny", compare_base=True, limit=2, max_new_tokens=24, decodings=("constrained",))

    def no_model_loads(*args, **kwargs):
        raise AssertionError("the gate loaded a model although identical scores were stored")

    monkeypatch.setattr("rl.core.base_model.load_causal_lm", no_model_loads)
    call_command("gate_model", "--checkpoint", "tiny", *QUICK, *PERMISSIVE)
    assert "passed its gate" in capsys.readouterr().out
    # other data (a larger limit) is not in the cache, so it must be scored
    with pytest.raises(AssertionError, match="loaded a model"):
        call_command("gate_model", "--checkpoint", "tiny", *QUICK, "--set", "gate_eval_limit=3", *PERMISSIVE)


def test_a_rejected_run_exits_1_with_its_reasons_and_nothing_goes_live(tiny_run, simulated_ollama, settings, capsys):
    settings.OLLAMA_HOST = simulated_ollama.url
    with pytest.raises(CommandError, match="rejected by the gate") as error:
        call_command("gate_model", "--checkpoint", "tiny", "--deploy", *QUICK, *MARGINS, "--set", "gate_min_widget_gain=1.0")
    assert error.value.returncode == 1
    assert "constrained_widget_accuracy" in capsys.readouterr().out
    assert not ModelVersion.objects.exists() and not Deployment.objects.exists() and simulated_ollama.models == {}


def test_a_passing_run_is_exported_registered_and_made_live(tiny_run, simulated_ollama, settings, capsys):
    settings.OLLAMA_HOST = simulated_ollama.url
    call_command("gate_model", "--checkpoint", "tiny", "--deploy", "--quantization", "q8_0", *QUICK, *PERMISSIVE)
    live = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    assert live.training_run.name == "tiny" and live.gate["passed"] is True
    assert simulated_ollama.models["cc-widget-selector:live"]["digest"] == f"sha256:{live.sha256}"
    assert Deployment.objects.get().by.startswith("gate_model")
    assert "is live as cc-widget-selector:live" in capsys.readouterr().out


def test_a_live_models_scores_from_its_own_gate_are_reused_by_the_next_gate(tiny_run, simulated_ollama, settings, monkeypatch, capsys):
    settings.OLLAMA_HOST = simulated_ollama.url
    call_command("gate_model", "--checkpoint", "tiny", "--deploy", "--quantization", "q8_0", *QUICK, *PERMISSIVE)
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE).training_run.name == "tiny"

    def no_model_loads(*args, **kwargs):
        raise AssertionError("the gate loaded a model although identical scores were stored")

    monkeypatch.setattr("rl.core.base_model.load_causal_lm", no_model_loads)
    # The same adapter against itself live, on the data of its own gate: nothing to score again.
    call_command("gate_model", "--checkpoint", "tiny", *QUICK, *PERMISSIVE)
    assert "passed its gate" in capsys.readouterr().out


def test_an_unknown_run_is_a_clear_error(db, checkpoints):
    with pytest.raises(CommandError, match="nope"):
        call_command("gate_model", "--checkpoint", "nope")


@pytest.mark.parametrize(("candidate_widget", "verdict"), [(0.60, "passed its gate"), (0.31, "rejected by the gate")])
def test_the_gate_judges_on_the_whole_natural_set(tiny_run, monkeypatch, capsys, candidate_widget, verdict):
    """Which data the gate scores and decides on, with the scoring itself replaced by fixed numbers (the tiny model's
    real scores on the whole part take minutes; the demo scores them for real)."""
    from rl.data.evalsets import NATURAL_DATA_FILE, load_questions
    from rl.models import TrainingRun

    scored = []

    def fixed_scores(backend, evalset, **kwargs):
        scored.append((backend.name, evalset))
        widget = candidate_widget if backend.name.startswith("candidate") else 0.30
        n, pairs = len(evalset.cases), len(evalset.pairs)
        right = round(widget * n)  # the first `right` questions: the candidate's right answers include the base's
        return {"constrained_widget_accuracy": widget, "constrained_fixture_accuracy": 0.5, "preference_accuracy": 0.7,
                "constrained_valid_pick_rate": 1.0, "n_scenarios": n, "n_pairs": pairs,
                "constrained_widget_outcomes": [1] * right + [0] * (n - right), "constrained_fixture_outcomes": [1, 0] * (n // 2),
                "constrained_valid_outcomes": [1] * n, "preference_outcomes": [1] * round(0.7 * pairs) + [0] * (pairs - round(0.7 * pairs))}, None

    monkeypatch.setattr("rl.evaluation.gate_scoring.evaluate_backend", fixed_scores)
    with pytest.raises(CommandError) if verdict.startswith("rejected") else nullcontext():
        call_command("gate_model", "--checkpoint", "tiny", "--set", "gate_sets=natural")
    printed = capsys.readouterr().out
    assert [name.split()[0] for name, _ in scored] == ["candidate", "base"]
    for _, evalset in scored:  # both on every hand-written question, the same data
        assert len(evalset.cases) == len(load_questions()["questions"]) and evalset.description["data_file"] == str(NATURAL_DATA_FILE)
    assert scored[0][1].cases == scored[1][1].cases
    assert "widget: candidate right where live was wrong on" in printed
    evaluation = TrainingRun.objects.get(name="tiny").evaluation
    assert evaluation["gate:natural"]["constrained_widget_accuracy"] == candidate_widget and "gate:held_out" not in evaluation


def test_the_paired_rule_is_the_default_and_its_numbers_are_printed_and_kept(tiny_run, simulated_ollama, settings, capsys):
    settings.OLLAMA_HOST = simulated_ollama.url
    # two held-out questions: no gain can be told from chance on so few, whatever the tiny adapter answers
    with pytest.raises(CommandError, match="rejected by the gate"):
        call_command("gate_model", "--checkpoint", "tiny", "--deploy", *QUICK)
    out = capsys.readouterr().out
    assert "widget: candidate right where live was wrong on" in out and "not shown better" in out
    from rl.models import TrainingRun

    scores = TrainingRun.objects.get(name="tiny").evaluation["gate:held_out"]
    assert len(scores["constrained_widget_outcomes"]) == scores["constrained_n_scenarios"] == 2
    assert len(scores["preference_outcomes"]) == scores["n_pairs"]
    base_scores = list(TrainingRun.objects.get(name="tiny").evaluation["gate_cache"]["base"].values())  # kept for the next gate
    assert len(base_scores) == 1 and len(base_scores[0]["constrained_widget_outcomes"]) == 2
