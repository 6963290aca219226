"""Confusion-weighted sampling: the check between epochs, the weights it sets, and the draws the sampler makes from them."""
import json
import random
from collections import Counter

import pytest

from rl.core.config import ConfigError, training_config
from rl.core.prompts import Pick, answered_widget, render_pick
from rl.training.confusion import widget_weights
from rl.training.sampler import PromptGroupedBatchSampler, proportional_draw


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 1.0, 1.0], [0.5, 2.5, 1.0, 4.0, 2.0], [1.0, 0.0, 7.0]])
def test_each_index_is_drawn_the_floor_or_ceiling_of_its_share(weights):
    for seed in range(20):
        drawn = Counter(proportional_draw(weights, random.Random(seed)))
        assert sum(drawn.values()) == len(weights)
        for index, weight in enumerate(weights):
            share = weight / sum(weights) * len(weights)
            assert int(share) <= drawn[index] <= int(share) + 1, (seed, index, share, drawn)


def test_equal_weights_draw_every_index_once():
    assert sorted(proportional_draw([2.0] * 7, random.Random(0))) == list(range(7))


def test_the_sampler_draws_groups_by_their_rows_weight_in_as_many_batches():
    keys = [g for g in range(8) for _ in range(2)]  # 8 prompts of 2 rows each
    weights = [3.0 if key == 0 else 1.0 for key in keys]
    plain = PromptGroupedBatchSampler(keys, 4, seed=5)
    weighted = PromptGroupedBatchSampler(keys, 4, seed=5, row_weights_of=lambda: weights)
    assert len(list(weighted)) == len(plain) == 4
    rows = Counter(row for batch in weighted for row in batch)
    # group 0's share is 3 / (3 + 7) of 8 draws: 2.4, so 2 or 3 draws; every other group 0.8: 0 or 1
    assert rows[0] == rows[1] in (2, 3)
    assert all(rows[r] <= 1 for r in range(2, 16))
    assert sum(rows.values()) == 16


def test_the_sampler_draws_every_row_once_until_weights_come():
    keys = [g for g in range(5) for _ in range(3)]
    weights = None
    sampler = PromptGroupedBatchSampler(keys, 4, seed=1, row_weights_of=lambda: weights)
    assert sorted(row for batch in sampler for row in batch) == list(range(15))
    weights = [1.0] * 15
    assert sorted(row for batch in sampler for row in batch) == list(range(15))


def test_widget_weights_grow_with_what_the_check_got_wrong():
    per_widget = {"kpi_card": {"recall": 1.0, "support": 4}, "gauge": {"recall": 0.25, "support": 4},
                  "table": {"recall": 0.0, "support": 0}}
    assert widget_weights(per_widget, 2.0) == {"kpi_card": 1.0, "gauge": 2.5}


def test_answered_widget_reads_the_answer_or_gives_none():
    assert answered_widget(render_pick(Pick("gauge", ("chiller_1_kw",), "Chiller 1"))) == "gauge"
    assert answered_widget("no json here") is None
    assert answered_widget('{"fixtures": ["a"]}') is None


def test_a_negative_confusion_weighting_is_refused():
    with pytest.raises(ConfigError, match="confusion_weighting"):
        training_config("cpu", confusion_weighting=-1.0)


def test_a_two_epoch_run_checks_its_training_questions_between_epochs_and_weighs_the_second(demo_db, tiny_model_dir, checkpoints,
                                                                                          monkeypatch):
    """Real scoring: the tiny model's constrained answers to training questions after epoch 1 (6 steps of 4 of the 24
    pairs), recorded with the weights they set, which the second epoch's sampler reads; no check after the last epoch."""
    from rl.training.confusion import ConfusionWeightedSampling
    from rl.training.run import run_training
    from tests.rl_cases import data, tiny_config

    given = []
    row_weights = ConfusionWeightedSampling.row_weights
    monkeypatch.setattr(ConfusionWeightedSampling, "row_weights", lambda self, ids: given.append(row_weights(self, ids)) or given[-1])

    config = tiny_config(tiny_model_dir, max_steps=12, save_steps=100, confusion_weighting=2.0, confusion_check_scenarios=5)
    result = run_training(config, data(), preset="cpu", run_name="confused")
    assert result.status == "succeeded", result.error
    records = [json.loads(line) for line in (checkpoints / "confused" / "metrics.jsonl").read_text().splitlines()]
    checks = [row for row in records if "confusion/recall" in row]
    assert [row["step"] for row in checks] == [6]
    recall, weights = checks[0]["confusion/recall"], checks[0]["confusion/weight"]
    assert recall and set(recall) == set(weights)
    assert all(weights[w] == pytest.approx(round(1 + 2.0 * (1 - recall[w]), 2)) for w in recall)
    assert given[0] is None and len(given) == 2  # epoch 1 draws every row once; epoch 2 by the check's weights
    allowed = [1.0, *(1 + 2.0 * (1 - r) for r in recall.values())]
    assert len(given[1]) == 24 and all(min(abs(w - a) for a in allowed) < 0.01 for w in given[1])


def test_spread_by_label_keeps_every_stretch_near_each_labels_share():
    from rl.training.sampler import spread_by_label

    labels = ["kpi_card"] * 30 + ["gauge"] * 10 + ["table"] * 5
    for seed in range(10):
        order = spread_by_label(list(range(45)), labels, random.Random(seed))
        assert sorted(order) == list(range(45))
        for m in range(1, 46):
            seen = Counter(labels[i] for i in order[:m])
            for label, n in Counter(labels).items():
                assert abs(seen[label] - m * n / 45) < 2, (seed, m, label)


def test_a_shuffle_is_not_spread_so_the_test_above_can_fail():
    labels = ["kpi_card"] * 30 + ["gauge"] * 10 + ["table"] * 5
    order = list(range(45))
    random.Random(0).shuffle(order)
    worst = max(abs(Counter(labels[i] for i in order[:m])[label] - m * n / 45)
                for m in range(1, 46) for label, n in Counter(labels).items())
    assert worst >= 2


def test_the_sampler_spreads_groups_by_their_label_and_keeps_them_whole():
    keys = [g for g in range(12) for _ in range(2)]
    labels = ["a" if key < 8 else "b" for key in keys]
    batches = list(PromptGroupedBatchSampler(keys, 4, seed=2, row_labels=labels))
    assert sorted(row for batch in batches for row in batch) == list(range(24))
    assert all(batch[0] // 2 == batch[1] // 2 and batch[2] // 2 == batch[3] // 2 for batch in batches)
    firsts = [labels[batch[0]] + labels[batch[2]] for batch in batches]
    assert all(Counter("".join(firsts[:m]))["b"] >= m * 2 // 3 - 1 for m in range(1, 7))


def test_a_run_with_widget_spread_batches_trains_on_every_pair(demo_db, tiny_model_dir, checkpoints, monkeypatch):
    from rl.training import prefix_sharing
    from rl.training.run import run_training
    from tests.rl_cases import data, tiny_config

    samplers = []
    monkeypatch.setattr(prefix_sharing, "PromptGroupedBatchSampler",
                        lambda *args, **kwargs: samplers.append(PromptGroupedBatchSampler(*args, **kwargs)) or samplers[-1])
    config = tiny_config(tiny_model_dir, max_steps=6, save_steps=100, widget_spread_batches=True)
    result = run_training(config, data(), preset="cpu", run_name="spread")
    assert result.status == "succeeded", result.error
    labels = samplers[0].row_labels
    assert len(labels) == 24 and None not in labels and len(set(labels)) > 1
