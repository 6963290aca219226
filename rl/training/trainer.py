"""`CommandCenterDPOTrainer`: the base model plus a LoRA adapter, trained with TRL's DPO (or KTO) on rating pairs.

With PEFT the reference model is the base with the adapter switched off: one copy of the weights, never two.
DPO goes through `PrefixSharingDPOTrainer` (TRL's DPOTrainer with each pair's prompt computed once).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.core.allocator import log_allocator
from rl.core.base_model import has_cuda, load_causal_lm, load_tokenizer
from rl.core.config import TrainingConfig, training_config
from rl.core.console import on_terminal
from rl.core.cpu_precision import cpu_bf16_is_faster, measured_cpu_precision
from rl.core.runs import CHECKPOINT_DIR, FINAL_DIR, METRICS_FILE
from rl.training.adapter import adapted_layers, frozen_linears_to_bf16, load_initial_adapter, lora_config
from rl.training.callbacks import FreedPagesBound, metrics_callback, progress_callback, step_log_callback
from rl.training.confusion import ConfusionWeightedSampling
from rl.training.distributed import (
    on_main_process,
    share_adapter_from_main,
    training_state,
)
from rl.training.sampler import rows_the_steps_reach
from rl.training.time_budget import TimeBudgetCallback

logger = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    algo: str
    final_dir: Path
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    dropped_too_long: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    time_budget: dict[str, Any] | None = None


def _restored_earlier(callbacks: list[Any], trainer: Any) -> bool:
    return any(getattr(c, "best_step", None) not in (None, trainer.state.global_step) for c in callbacks)


class CommandCenterDPOTrainer:
    """Load a base model, attach LoRA, train with DPO or KTO, save the adapter.

        trainer = CommandCenterDPOTrainer(config_name="cpu", max_steps=20)
        trainer.load_base_model()
        outcome = trainer.train(train_dataset, eval_dataset, output_dir="rl_checkpoints/my-run")
    """

    def __init__(self, config_name: str = "default", *, config: TrainingConfig | None = None, **overrides: Any):
        self.preset = config_name
        self.config = config.replace(**overrides) if config is not None else training_config(config_name, **overrides)
        self.config = self._fit_to_machine(self.config)
        if not has_cuda():
            log_allocator()
        self.clock_started = time.monotonic()  # max_minutes counts from here, before the base model loads
        self.time_budget: TimeBudgetCallback | None = None
        self.model: Any = None
        self.tokenizer: Any = None

    @staticmethod
    def _fit_to_machine(config: TrainingConfig) -> TrainingConfig:
        if has_cuda() or not (config.bf16 or config.load_in_4bit):
            return config
        if config.load_in_4bit:
            logger.warning("No GPU here: the preset asks for 4-bit quantization (bitsandbytes, NVIDIA only); training without it.")
            config = config.replace(load_in_4bit=False)
        if config.bf16 and not cpu_bf16_is_faster():
            logger.warning("No GPU, and bf16 is not clearly faster than fp32 on this CPU (%s; no AMX or AVX512-BF16 that "
                           "oneDNN may use): the preset asks for bf16; training in fp32 instead.", measured_cpu_precision().describe())
            config = config.replace(bf16=False)
        elif config.bf16:
            logger.info("No GPU: bf16 autocast on the CPU, with fp32 adapters (%s).", measured_cpu_precision().describe())
        return config

    def load_base_model(self) -> tuple[Any, Any]:
        import torch

        cfg = self.config
        # On a CPU, bf16 is autocast (the Trainer's mixed precision) over fp32 adapters, whose small updates bf16
        # weights would lose to rounding; the frozen base linears are cast to bf16 below.
        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cfg.bf16 and has_cuda() else torch.float32}
        if cfg.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if cfg.bf16 else torch.float16,
            )
            kwargs["device_map"] = {"": training_state().local_process_index}  # each process its own GPU
        self.tokenizer = load_tokenizer(cfg.base_model or None)
        self.model = load_causal_lm(cfg.base_model or None, **kwargs)
        if cfg.load_in_4bit:
            from peft import prepare_model_for_kbit_training

            self.model = prepare_model_for_kbit_training(self.model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        logger.info("Base model %s: %.1fM parameters, %s", cfg.base_model or "(default)", self.model.num_parameters() / 1e6, kwargs["dtype"])
        if cfg.bf16 and not has_cuda() and not cfg.load_in_4bit:
            logger.info("Its %d linear weights held in bf16 (frozen; autocast would cast them at every call); adapters in fp32.",
                        frozen_linears_to_bf16(self.model))
        return self.model, self.tokenizer

    def lora_config(self) -> Any:
        return lora_config(self.config, self.model)

    def _new_adapter_config(self) -> Any:
        """The LoRA config for TRL to attach, or None when the model already carries its adapter."""
        from peft import PeftModel

        return None if isinstance(self.model, PeftModel) else self.lora_config()

    def adapted_layers(self) -> list[int] | None:
        return adapted_layers(self.config, self.model)

    def choose_algo(self, n_pairs: int, n_kto_rows: int) -> str:
        """With algo `auto`: DPO when preference pairs are plenty and outnumber the thumbs on questions that have no
        pair (`n_kto_rows`); otherwise KTO, which trains on both (each pair gives a desirable and an undesirable row)."""
        cfg = self.config
        if cfg.algo != "auto":
            return cfg.algo
        if n_kto_rows == 0 or (n_pairs >= cfg.kto_min_pairs and n_kto_rows <= n_pairs):
            logger.info("algo auto: %d preference pairs, %d thumbs on questions without a pair: DPO", n_pairs, n_kto_rows)
            return "dpo"
        logger.info("algo auto: %d preference pairs (DPO needs %d and more than the %d thumbs on questions without a pair): KTO on both",
                    n_pairs, cfg.kto_min_pairs, n_kto_rows)
        return "kto"

    def _common_args(self, output_dir: Path, has_eval: bool) -> dict[str, Any]:
        cfg = self.config
        return dict(
            output_dir=str(output_dir / CHECKPOINT_DIR),
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=cfg.warmup_ratio,
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            beta=cfg.beta,
            neftune_noise_alpha=cfg.neftune_noise_alpha or None,
            bf16=cfg.bf16,
            fp16=False,
            activation_checkpointing=cfg.gradient_checkpointing,
            logging_steps=cfg.logging_steps,
            logging_first_step=True,
            disable_tqdm=not on_terminal(),
            save_strategy="steps",
            save_steps=cfg.save_steps,
            save_total_limit=2,
            eval_strategy=("steps" if cfg.eval_steps else "epoch") if has_eval else "no",
            eval_steps=cfg.eval_steps or None,
            report_to=["tensorboard"],
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=not has_cuda(),
            dataloader_num_workers=0,
            remove_unused_columns=True,
        )

    def _rows_the_steps_reach(self, train_dataset: Any) -> Any:
        """With max_steps ending training within the first pass, train (and compute reference log-probs) on the rows
        the steps can reach, not on all of them: the online learner's capped retrains spent most of their time on
        reference passes over pairs they never trained on."""
        cfg = self.config
        keys = train_dataset["scenario_id"] if "scenario_id" in train_dataset.column_names else list(range(len(train_dataset)))
        rows_per_step = cfg.batch_size * cfg.gradient_accumulation_steps * training_state().num_processes
        rows = rows_the_steps_reach(keys, cfg.max_steps, rows_per_step, cfg.seed)
        if rows is None:
            return train_dataset
        logger.info("max_steps %d x %d pairs per step: training on %d of the %d pairs (whole scenarios, seeded)",
                    cfg.max_steps, rows_per_step, len(rows), len(train_dataset))
        return train_dataset.select(rows)

    def train(
        self,
        train_dataset: Any,
        eval_dataset: Any = None,
        *,
        output_dir: str | Path,
        kto_dataset: Any = None,
        resume_from_checkpoint: bool = False,
        callbacks: list[Any] | None = None,
    ) -> TrainOutcome:
        """Train and save the adapter and tokenizer to `output_dir/final`; KeyboardInterrupt saves a checkpoint first."""
        if self.model is None:
            self.load_base_model()
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paired = set(train_dataset["scenario_id"]) if "scenario_id" in train_dataset.column_names else set()
        # Thumbs on questions that also have pairs are mostly pairs left out by max_pairs_per_scenario, not missing ones.
        n_unpaired_only = sum(s not in paired for s in kto_dataset["train"]["scenario_id"]) if kto_dataset is not None else 0
        algo = self.choose_algo(len(train_dataset), n_unpaired_only)
        if algo == "dpo":
            train_dataset = self._rows_the_steps_reach(train_dataset)
        eval_dataset = self._capped_eval(eval_dataset)
        all_callbacks = [metrics_callback(output_dir / METRICS_FILE), FreedPagesBound(), *(callbacks or [])]
        self.time_budget = TimeBudgetCallback(self.config.max_minutes * 60, self.clock_started) if self.config.max_minutes else None
        if self.time_budget is not None:
            all_callbacks.append(self.time_budget)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        previous_tb = os.environ.get("TENSORBOARD_LOGGING_DIR")
        # Read by TensorBoardCallback when the trainer is built.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / "tensorboard")
        began = time.perf_counter()
        try:
            starts_as_reference = self.config.init_adapter and self.config.init_adapter_reference == "adapter"
            if starts_as_reference:
                # Given a PeftModel, TRL keeps a frozen copy of its adapter as the reference; it must hold the trained
                # weights before the trainer is built, which computes the reference log-probs.
                from peft import get_peft_model

                self.model = get_peft_model(self.model, self.lora_config())
                load_initial_adapter(self.model, self.config.init_adapter)
            if algo == "dpo":
                trainer = self._dpo_trainer(train_dataset, eval_dataset, output_dir)
            else:
                trainer = self._kto_trainer(train_dataset, eval_dataset, kto_dataset, output_dir)
            if self.config.init_adapter and not starts_as_reference:
                load_initial_adapter(trainer.model, self.config.init_adapter)
            if self.config.lora_init == "eva":
                self._eva_initialize(trainer, algo)
            trainer.remove_callback(ProgressCallback)
            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(progress_callback() if on_terminal() else step_log_callback())
            for callback in all_callbacks:
                trainer.add_callback(callback)
                if isinstance(callback, ConfusionWeightedSampling):
                    trainer.row_weighting = callback
            result = trainer.train(resume_from_checkpoint=True if resume_from_checkpoint else None)
        except KeyboardInterrupt:
            if "trainer" in locals() and trainer.state.global_step > 0:
                logger.warning("Interrupted at step %d: saving a checkpoint to resume from.", trainer.state.global_step)
                trainer._save_checkpoint(trainer.model, trial=None)
            raise
        finally:
            if previous_tb is None:
                os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
            else:
                os.environ["TENSORBOARD_LOGGING_DIR"] = previous_tb
        seconds = time.perf_counter() - began
        # The best-pick callback runs on the main process only; what it decided is shared, so that every process
        # evaluates and ends with the same adapter.
        restored = on_main_process(lambda: _restored_earlier(all_callbacks, trainer), share=True)
        if restored:
            share_adapter_from_main(trainer.model)
        eval_metrics = {}
        if eval_dataset is not None and len(eval_dataset) and algo == "dpo":
            last = trainer.state.log_history[-2] if len(trainer.state.log_history) >= 2 else {}
            # The epoch-end evaluation of the last step already scored these weights, unless the best-pick callback
            # has since put an earlier adapter back.
            reuse = last.get("step") == trainer.state.global_step and "eval_loss" in last and not restored
            eval_metrics = {k: v for k, v in last.items() if k.startswith("eval_")} if reuse else trainer.evaluate()
        from rl.training.prefix_sharing import REFERENCE_ADAPTER

        final_dir = output_dir / FINAL_DIR
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if REFERENCE_ADAPTER in getattr(unwrapped, "peft_config", {}):
            unwrapped.delete_adapter(REFERENCE_ADAPTER)  # the saved adapter is the trained one alone
        trainer.save_model(str(final_dir))
        on_main_process(lambda: self.tokenizer.save_pretrained(str(final_dir)))
        self.model = trainer.model
        return TrainOutcome(
            algo=algo, final_dir=final_dir, train_metrics=dict(result.metrics), eval_metrics=dict(eval_metrics),
            dropped_too_long=dict(getattr(trainer, "dropped_too_long", {})), seconds=seconds,
            time_budget=self.time_budget.summary() if self.time_budget is not None else None,
        )

    def _eva_initialize(self, trainer: Any, algo: str) -> None:
        if algo != "dpo":
            logger.warning("lora_init eva reads DPO pairs' prompts; this run trains %s: its A matrices start at random.", algo.upper())
            return
        from rl.training.eva import eva_batches, eva_initialize

        eva_initialize(trainer.model, eva_batches(trainer.train_dataset, self.tokenizer.pad_token_id),
                       autocast=trainer.accelerator.autocast)

    def _capped_eval(self, eval_dataset: Any) -> Any:
        """At most `max_eval_pairs` eval rows, a seeded sample."""
        cap = self.config.max_eval_pairs
        if eval_dataset is not None and cap and len(eval_dataset) > cap:
            return eval_dataset.shuffle(seed=self.config.seed).select(range(cap))
        return eval_dataset

    def _prefix_sharing_collator(self) -> Any:
        from rl.core.shared_prefix import PrefixSharingCollator

        eager = getattr(self.model.config, "_attn_implementation", "sdpa") == "eager"
        # Gradient checkpointing turns the key/value cache off inside the layers: the common prefix is packed instead.
        return PrefixSharingCollator(self.tokenizer.pad_token_id, eager_attention=eager, title_weight=self.config.title_weight,
                                     prefix_cache=not self.config.gradient_checkpointing)

    def _dpo_trainer(self, train_dataset: Any, eval_dataset: Any, output_dir: Path) -> Any:
        from trl import DPOConfig

        from rl.training.prefix_sharing import PrefixSharingDPOTrainer

        cfg = self.config
        unsupported = set(cfg.loss_types) - set(PrefixSharingDPOTrainer.SUPPORTED_LOSSES)
        if unsupported:
            raise ValueError(f"loss_type {', '.join(sorted(unsupported))} is not supported here: use {PrefixSharingDPOTrainer.SUPPORTED_LOSSES}.")
        if cfg.label_smoothing and "sigmoid" not in cfg.loss_types:
            logger.info("label_smoothing %g smooths the sigmoid loss only; this run's %s do not read it.", cfg.label_smoothing, ", ".join(cfg.loss_types))
        args = DPOConfig(
            **self._common_args(output_dir, eval_dataset is not None and len(eval_dataset) > 0),
            loss_type=cfg.loss_types, loss_weights=cfg.loss_weights, label_smoothing=cfg.label_smoothing,
            max_length=None, precompute_ref_log_probs=cfg.precompute_ref_log_probs,
        )
        trainer = PrefixSharingDPOTrainer(
            model=self.model, args=args, train_dataset=train_dataset,
            eval_dataset=eval_dataset if eval_dataset is not None and len(eval_dataset) else None,
            processing_class=self.tokenizer, peft_config=self._new_adapter_config(), data_collator=self._prefix_sharing_collator(),
            max_pair_tokens=cfg.max_length,
        )
        trainer.widget_spread_batches = cfg.widget_spread_batches
        trainer.prompt_gradient_tokens = cfg.prompt_gradient_tokens
        if cfg.neftune_noise_alpha:
            trainer.kept_layer_inputs = None
        return trainer

    def _kto_trainer(self, train_pairs: Any, eval_pairs: Any, kto_dataset: Any, output_dir: Path) -> Any:
        """KTO over every rating: the pairs split into desirable and undesirable rows, plus the unpaired thumbs."""
        from datasets import Dataset
        from trl import DPOConfig

        from rl.training.kto import PrefixSharingKTOTrainer, kto_class_weights, kto_rows

        cfg = self.config
        split = {}
        for name, pairs in (("train", train_pairs), ("eval", eval_pairs)):
            unpaired = kto_dataset[name].to_list() if kto_dataset is not None and name in kto_dataset else []
            rows = (pairs.to_list() if pairs is not None else [], unpaired)
            split[name] = Dataset.from_list(kto_rows(*rows, seed=cfg.seed)) if sum(map(len, rows)) else None
        if split["train"] is None:
            raise ValueError("KTO needs ratings, and this dataset has none.")
        if cfg.prompt_gradient_tokens != -1:
            logger.warning("prompt_gradient_tokens applies to DPO's step; this KTO run back-propagates through its whole prompts.")
        labels = split["train"]["label"]
        desirable_weight, undesirable_weight = kto_class_weights(sum(labels), len(labels) - sum(labels))
        logger.info("KTO: %d rows (%d up, %d down); desirable_weight %.3f, undesirable_weight %.3f",
                    len(labels), sum(labels), len(labels) - sum(labels), desirable_weight, undesirable_weight)
        split["eval"] = self._capped_eval(split["eval"])
        has_eval = split["eval"] is not None and len(split["eval"]) > 0
        losses = [name for name in cfg.loss_types if name == "sft"]
        args = DPOConfig(**self._common_args(output_dir, has_eval), loss_type=["sigmoid", *losses],
                         loss_weights=[1.0, *[cfg.sft_weight for _ in losses]], max_length=None,
                         precompute_ref_log_probs=cfg.precompute_ref_log_probs)
        return PrefixSharingKTOTrainer(
            model=self.model, args=args, train_dataset=split["train"], eval_dataset=split["eval"] if has_eval else None,
            processing_class=self.tokenizer, peft_config=self._new_adapter_config(), data_collator=self._prefix_sharing_collator(),
            max_pair_tokens=cfg.max_length, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
        )
