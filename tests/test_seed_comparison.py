"""compare_runs: one recipe's seeds against another's on the same questions, on hand-made per-question outcomes."""
import pytest
from django.core.management import CommandError, call_command

from rl.evaluation.seed_comparison import SeedComparisonError, SeedScores, compare_seeds, seed_scores

DATA = {"set": "natural", "split": "all", "limit": None, "n_scenarios": 8}


def scores(run: str, widget: list[int], fixture: list[int] | None = None, data: dict | None = None) -> SeedScores:
    return SeedScores(run, {"widget": widget, "fixture": fixture or [1] * len(widget)}, [], data or DATA)


def test_runs_pair_by_position_and_the_figures_are_the_hand_counted_ones():
    candidate = [scores("c1", [1, 1, 1, 1, 1, 1, 0, 0]), scores("c2", [1, 1, 1, 1, 1, 1, 1, 0])]
    baseline = [scores("b1", [1, 1, 1, 1, 0, 0, 0, 0]), scores("b2", [1, 1, 1, 1, 1, 1, 1, 1])]
    comparison = compare_seeds(candidate, baseline, set_name="natural")
    widget = next(m for m in comparison.metrics if m.metric == "widget")
    # c1 against b1: right only with c1 on items 5, 6; c2 against b2: right only with b2 on item 8
    assert (widget.candidate_only, widget.baseline_only) == (2, 1)
    assert widget.difference.mean == pytest.approx((2 - 1) / 16)
    assert widget.difference.items == 8  # the questions are resampled, each with its mean over the seeds
    assert widget.difference.low <= widget.difference.mean <= widget.difference.high
    text = comparison.words()
    assert "0.812 (13/16)" in text and "0.750 (12/16)" in text  # the two sides' means
    worst = [line.split() for line in text.splitlines() if line.strip().startswith("worst seed")]
    assert worst == [["worst", "seed", "0.750", "1.000"], ["worst", "seed", "0.500", "1.000"]]


def test_the_same_answers_on_both_sides_differ_by_nothing():
    same = [scores("a", [1, 0, 1, 0, 1, 0, 1, 1])]
    comparison = compare_seeds(same, [scores("b", [1, 0, 1, 0, 1, 0, 1, 1])], set_name="natural")
    for metric in comparison.metrics:
        assert (metric.candidate_only, metric.baseline_only) == (0, 0)
        assert (metric.difference.low, metric.difference.mean, metric.difference.high) == (0.0, 0.0, 0.0)


def test_the_interval_is_over_questions_so_seeds_that_agree_do_not_narrow_it():
    """Five seeds that each repeat one seed's answers are one seed's evidence: the interval must not shrink as it would
    if the 5 x 20 (seed, question) pairs were resampled as independent items."""
    c, b = [1] * 14 + [0] * 6, [1] * 10 + [0] * 10
    one = compare_seeds([scores("c", c)], [scores("b", b)], set_name="natural").metrics[0].difference
    five = compare_seeds([scores(f"c{i}", c) for i in range(5)], [scores(f"b{i}", b) for i in range(5)],
                         set_name="natural").metrics[0].difference
    assert (five.low, five.mean, five.high) == pytest.approx((one.low, one.mean, one.high))


def test_unequal_sides_or_other_questions_are_refused():
    with pytest.raises(SeedComparisonError, match="as many baseline runs"):
        compare_seeds([scores("a", [1] * 8), scores("b", [1] * 8)], [scores("c", [1] * 8)], set_name="natural")
    with pytest.raises(SeedComparisonError, match="not evaluated on the same questions"):
        compare_seeds([scores("a", [1] * 8)], [scores("c", [1] * 8, data={**DATA, "split": "test"})], set_name="natural")
    with pytest.raises(SeedComparisonError, match="not evaluated on the same questions"):
        compare_seeds([scores("a", [1] * 8)], [scores("c", [1] * 7)], set_name="natural")


def evaluated(widget: list[int], model: str = "adapter (final)", **extra) -> dict:
    tuned = {"constrained_widget_outcomes": widget, "constrained_fixture_outcomes": [1] * len(widget),
             "constrained_collapse_warnings": [], **extra}
    return {"data": {**DATA, "data_file": "/elsewhere/natural.json"}, "models": {"tuned": model}, "tuned": tuned}


@pytest.fixture
def runs(db):
    from rl.models import ModelVersion, TrainingRun

    made = {}
    for name, adapter, gguf in (("new-s1", [1] * 6 + [0] * 2, [1] * 5 + [0] * 3), ("old-s1", [1] * 4 + [0] * 4, [1] * 4 + [0] * 4)):
        made[name] = run = TrainingRun.objects.create(name=name, status="succeeded", evaluation={"natural": evaluated(adapter)})
        ModelVersion.objects.create(name="cc", tag=name, quantization="q4_k_m", training_run=run,
                                    evaluation={"natural": evaluated(gguf, "gguf (model-q4_k_m.gguf)")})
    # an export that only copied the adapter's results: no GGUF evaluation of its own
    made["copied"] = run = TrainingRun.objects.create(name="copied", status="succeeded", evaluation={"natural": evaluated([1] * 8)})
    ModelVersion.objects.create(name="cc", tag="copied", quantization="q4_k_m", training_run=run, evaluation={"natural": evaluated([1] * 8)})
    return made


def test_the_command_compares_adapters_or_their_ggufs(runs, capsys):
    call_command("compare_runs", "--candidate", "new-s1", "--baseline", "old-s1")
    adapters = capsys.readouterr().out
    assert "natural (8 questions), adapter" in adapters and "0.750 (6/8)" in adapters and "0.500 (4/8)" in adapters
    call_command("compare_runs", "--candidate", "new-s1", "--baseline", "old-s1", "--gguf", "q4_k_m")
    ggufs = capsys.readouterr().out
    assert "q4_k_m GGUF" in ggufs and "0.625 (5/8)" in ggufs and "0.750 (6/8)" not in ggufs
    assert "right only with the candidate on 1 (seed, question) pairs, only with the baseline on 0" in ggufs


def test_the_command_refuses_unknown_runs_and_missing_evaluations(runs):
    with pytest.raises(CommandError, match="No training run named 'nope'"):
        call_command("compare_runs", "--candidate", "new-s1", "--baseline", "nope")
    with pytest.raises(CommandError, match="no evaluation on 'natural-sealed'"):
        call_command("compare_runs", "--candidate", "new-s1", "--baseline", "old-s1", "--set", "natural-sealed")
    with pytest.raises(CommandError, match="'copied''s q4_k_m GGUF has no evaluation"):
        call_command("compare_runs", "--candidate", "new-s1", "--baseline", "copied", "--gguf", "q4_k_m")


def test_an_evaluation_without_per_question_outcomes_is_refused(runs):
    from rl.models import TrainingRun

    run = TrainingRun.objects.create(name="old-format", status="succeeded",
                                     evaluation={"natural": {"data": DATA, "tuned": {"constrained_widget_accuracy": 0.5}}})
    with pytest.raises(SeedComparisonError, match="no per-question outcomes"):
        seed_scores(run, "natural")
