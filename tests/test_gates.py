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


# The paired rule, on hand-made per-item outcomes.
from rl.deploy.gates import PairedRule, gate_decision_paired, item_outcomes  # noqa: E402


def outcomes(widget, fixture=None, valid=None, preference=None):
    n = len(widget)
    return {"widget": widget, "fixture": fixture if fixture is not None else [1] * n, "valid": valid if valid is not None else [1] * n,
            "preference": preference if preference is not None else [1, 0] * 10}


def test_paired_a_clear_win_on_the_discordant_items_passes_and_says_so_in_words():
    candidate = {"natural": outcomes([1] * 14 + [0] * 4 + [1] * 30), "held_out": outcomes([1] * 6 + [0] * 14)}
    live = {"natural": outcomes([0] * 14 + [1] * 4 + [1] * 30), "held_out": outcomes([1] * 6 + [0] * 14)}
    decision = gate_decision_paired(candidate, live, PairedRule())
    assert decision.passed, decision.reasons
    assert decision.statistics["widget"]["candidate_only"] == 14 and decision.statistics["widget"]["live_only"] == 4
    assert "candidate right where live was wrong on 14 items, the reverse on 4 (of 68): p = 0.0154" in decision.reasons[0]
    assert decision.as_dict()["rule"] == "paired" and decision.as_dict()["statistics"]["fixture"]["margin"] == 0.10


def test_paired_a_tie_or_a_win_too_small_to_be_told_from_chance_fails():
    tie = gate_decision_paired({"natural": outcomes([1, 0] * 20)}, {"natural": outcomes([0, 1] * 20)}, PairedRule())
    assert not tie.passed and "not shown better" in tie.reasons[0]
    # two more right answers than the live model: the old rule's +0.02 would pass this on 48 items, the paired rule does not
    small = gate_decision_paired({"natural": outcomes([1] * 3 + [0] * 1 + [1] * 20 + [0] * 24)},
                                 {"natural": outcomes([0] * 3 + [1] * 1 + [1] * 20 + [0] * 24)}, PairedRule())
    assert not small.passed and small.statistics["widget"]["p_value"] > 0.05


def test_paired_a_widget_win_with_a_fixture_loss_beyond_the_margin_fails():
    widget_c, widget_l = [1] * 14 + [0] * 2 + [1] * 32, [0] * 14 + [1] * 2 + [1] * 32
    candidate = {"natural": outcomes(widget_c, fixture=[0] * 10 + [1] * 38)}
    live = {"natural": outcomes(widget_l, fixture=[1] * 48)}
    decision = gate_decision_paired(candidate, live, PairedRule())
    assert not decision.passed
    assert decision.reasons == [r for r in decision.reasons if r.startswith("fixture:")] and "may be worse" in decision.reasons[0]
    assert decision.statistics["fixture"]["high"] < 0


def test_paired_without_per_item_outcomes_fails_clearly():
    assert item_outcomes({"constrained_widget_accuracy": 0.5}) == {}
    decision = gate_decision_paired({"natural": {}}, {"natural": {}}, PairedRule())
    assert not decision.passed and "no per-item outcomes" in decision.reasons[0]
    unequal = gate_decision_paired({"natural": outcomes([1] * 10)}, {"natural": outcomes([1] * 9)}, PairedRule())
    assert not unequal.passed and "not scored on the same items" in unequal.reasons[0]
