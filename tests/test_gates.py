"""The deploy gate as a pure function: numbers in, a decision with reasons out."""
from rl.deploy.gates import GateThresholds, gate_decision


def metrics(widget: float, fixture: float = 0.7, preference: float = 0.8, valid: float = 1.0, n_pairs: int = 10) -> dict:
    return {"constrained_widget_accuracy": widget, "constrained_fixture_accuracy": fixture, "preference_accuracy": preference,
            "constrained_valid_pick_rate": valid, "n_pairs": n_pairs}


THRESHOLDS = GateThresholds(min_widget_gain=0.02, fixture_tolerance=0.02, preference_tolerance=0.02, min_valid_rate=0.95)


def test_a_candidate_that_beats_the_live_model_on_every_set_passes():
    decision = gate_decision({"held_out": metrics(0.60), "natural": metrics(0.40)},
                             {"held_out": metrics(0.50), "natural": metrics(0.35)}, THRESHOLDS)
    assert decision.passed
    assert len(decision.checks) == 8 and all(check.passed for check in decision.checks)


def test_a_worse_candidate_is_rejected_with_the_numbers_in_its_reasons():
    decision = gate_decision({"held_out": metrics(0.45), "natural": metrics(0.50)},
                             {"held_out": metrics(0.50), "natural": metrics(0.35)}, THRESHOLDS)
    assert not decision.passed
    assert decision.reasons == ["held_out: constrained_widget_accuracy 0.450 < 0.520 (live 0.500 + margin 0.02): too low"]
    as_dict = decision.as_dict()
    assert as_dict["passed"] is False and as_dict["thresholds"]["min_widget_gain"] == 0.02


def test_the_widget_gain_must_reach_the_margin_not_just_be_positive():
    assert not gate_decision({"held_out": metrics(0.51)}, {"held_out": metrics(0.50)}, THRESHOLDS).passed
    assert gate_decision({"held_out": metrics(0.52)}, {"held_out": metrics(0.50)}, THRESHOLDS).passed


def test_fixture_preference_and_valid_rate_each_can_reject():
    live = {"held_out": metrics(0.50, fixture=0.70, preference=0.80)}
    fixture = gate_decision({"held_out": metrics(0.60, fixture=0.67)}, live, THRESHOLDS)
    preference = gate_decision({"held_out": metrics(0.60, preference=0.77)}, live, THRESHOLDS)
    valid = gate_decision({"held_out": metrics(0.60, valid=0.90)}, live, THRESHOLDS)
    assert [d.passed for d in (fixture, preference, valid)] == [False, False, False]
    assert "constrained_fixture_accuracy 0.670 < 0.680" in fixture.reasons[0]
    assert "preference_accuracy 0.770 < 0.780" in preference.reasons[0]
    assert "constrained_valid_pick_rate 0.900 < 0.950" in valid.reasons[0]
    within = gate_decision({"held_out": metrics(0.60, fixture=0.69, preference=0.79)}, live, THRESHOLDS)
    assert within.passed


def test_a_set_the_live_model_was_not_scored_on_or_a_missing_metric_fails():
    missing_set = gate_decision({"held_out": metrics(0.9), "natural": metrics(0.9)}, {"held_out": metrics(0.1)}, THRESHOLDS)
    assert not missing_set.passed and "natural: the live model has no score on this set" in missing_set.reasons
    no_metric = gate_decision({"held_out": {"n_pairs": 0}}, {"held_out": metrics(0.1)}, THRESHOLDS)
    assert not no_metric.passed
    assert not gate_decision({}, {}, THRESHOLDS).passed


def test_without_held_out_pairs_preference_is_not_checked():
    decision = gate_decision({"natural": metrics(0.6, preference=0.1, n_pairs=0)}, {"natural": metrics(0.5)}, THRESHOLDS)
    assert decision.passed and all(c.metric != "preference_accuracy" for c in decision.checks)
