"""Run under `accelerate launch` by tests/test_distributed_training.py: trains the tiny model with
CommandCenterDPOTrainer on the demo pairs of the database DATABASE_URL names, and writes, per process, which pairs
each training batch held (in order) and the reference log-probs the process trained with.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_harness.py OUT_DIR BASE_MODEL N_PAIRS [--resume]

The pairs are recorded by wrapping the trainer's collator, so what is recorded is what the model was fed.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")

import django  # noqa: E402

django.setup()

from transformers import TrainerCallback  # noqa: E402

from rl.data.dataset_builder import prepare_training_dataset  # noqa: E402
from rl.training import trainer as trainer_module  # noqa: E402
from rl.training.distributed import exit_without_teardown, finish_processes, training_state  # noqa: E402


def pair_key(example: dict) -> str:
    ids = (example["prompt_ids"], example["chosen_ids"], example["rejected_ids"])
    return hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:12]


class Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.training = False
        self.batches: list[list[str]] = []
        self.reference_keys: list[str] = []
        self.reference: dict[str, list[float]] = {}

    def wrap(self, collator):
        def recording_collator(examples):
            keys = [pair_key(e) for e in examples]
            (self.batches.append(keys) if self.training else self.reference_keys.extend(keys))
            return collator(examples)

        return recording_collator

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.training = True
        dataset = train_dataloader.dataset
        self.reference = {pair_key(row): [row["ref_chosen_logps"], row["ref_rejected_logps"]] for row in dataset}

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False


def main() -> None:
    out_dir, base_model, n_pairs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    resume = "--resume" in sys.argv
    state = training_state()
    recorder = Recorder()
    original = trainer_module.CommandCenterDPOTrainer._prefix_sharing_collator
    trainer_module.CommandCenterDPOTrainer._prefix_sharing_collator = lambda self: recorder.wrap(original(self))

    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(n_pairs))
    trainer = trainer_module.CommandCenterDPOTrainer(
        "cpu", base_model=base_model, batch_size=2, epochs=2, max_steps=-1, save_steps=6, logging_steps=1, learning_rate=5e-3,
        warmup_ratio=0.0, eval_steps=0, pick_eval_scenarios=0, max_eval_pairs=8, lora_dropout=0.0,
    )
    outcome = trainer.train(train, None, output_dir=out_dir, resume_from_checkpoint=resume, callbacks=[recorder])
    record = {"process": state.process_index, "processes": state.num_processes, "batches": recorder.batches,
              "reference_keys": recorder.reference_keys, "reference": recorder.reference, "pairs": n_pairs,
              "final_dir": str(outcome.final_dir)}
    (out_dir / f"record-{state.process_index}{'-resumed' if resume else ''}.json").write_text(json.dumps(record))
    finish_processes()
    # The record is written and the process group is down; the interpreter's teardown, where a finished process has
    # aborted, is not what this harness tests.
    exit_without_teardown(0)


if __name__ == "__main__":
    main()
