"""Training presets, online-learning and serving settings, as dataclasses whose fields carry their help text once.

`train_dpo`'s flags are generated from these fields, so a flag, its help and its preset default cannot drift apart.
Django settings can override a preset field with RL_TRAINING_OVERRIDES = {"field": value}.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from rl.core.prompts import ANSWER_TOKEN_LIMIT
from rl.core.runs import is_adapter_folder


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **kwargs})


class ConfigError(ValueError):
    pass


class SettingsBase:
    """`replace` with checked names and `validate` of `choices`, shared by the settings dataclasses."""

    KIND = "setting"

    def replace(self, **overrides: Any) -> Any:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"Unknown {self.KIND}(s): {', '.join(sorted(unknown))}. Known: {', '.join(sorted(known))}.")
        config = dataclasses.replace(self, **overrides)
        config.validate()
        return config

    def validate(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainingConfig(SettingsBase):
    """One training run's settings. Presets below change some fields; flags change any."""

    KIND = "training setting"

    base_model: str = _f("", "Base model: Hugging Face id (offline cache), local folder, or .gguf file. Empty: RL_BASE_MODEL or SmolLM2-135M-Instruct.")
    algo: str = _f("dpo", "dpo (preference pairs), kto (unpaired thumbs), or auto (dpo when there are enough true pairs).", choices=("dpo", "kto", "auto"))
    init_adapter: str = _f("", "Continue training this LoRA adapter (a run's final/ folder) instead of a fresh one; its rank and modules are used. The online learner starts from the live model's adapter this way.")
    init_adapter_reference: str = _f("base", "With init_adapter, the DPO/KTO reference: 'base' (the base model, adapters off: every round optimizes the same objective) or 'adapter' (a frozen copy of the starting adapter, as TRL does when given a trained adapter: iterative DPO, each round measured against the model it improves).", choices=("base", "adapter"))
    lora_rank: int = _f(16, "LoRA rank r: higher = more capacity.")
    lora_alpha: int = _f(32, "LoRA scaling alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_init: str = _f("random", "How LoRA's A matrices start (B starts at zero either way, so the adapter starts as a no-op): 'random' (PEFT's default, drawn from the seed) or 'eva' (EVA: the principal directions of each adapted layer's inputs on the training prompts, the same space whatever the seed; DPO pairs, a fresh adapter; docs/training-recipe.md, round twenty-two).", choices=("random", "eva"))
    neftune_noise_alpha: float = _f(0, "NEFTune (transformers' neftune_noise_alpha): at training steps, uniform noise of scale alpha / sqrt(tokens x hidden size) on the input embeddings, a regularizer against overfitting the training questions' wording (the paper uses 5 to 15; 0: off).")
    lora_target_modules: str = _f("all-linear", "Modules that get adapters: 'all-linear' or comma separated names (q_proj,v_proj,...).")
    lora_layer_share: float = _f(1.0, "Share of the transformer layers, counted from the top, that get adapters (1: all). The layers below stay frozen and the backward pass stops at the lowest adapted one: 0.5 makes a training step about a third cheaper.")
    learning_rate: float = _f(5e-5, "Peak learning rate.")
    beta: float = _f(0.1, "DPO/KTO beta: how far the policy may move from the reference (lower = stronger preferences).")
    label_smoothing: float = _f(0.0, "TRL's label_smoothing for the sigmoid loss (conservative DPO, cDPO): the share of pairs assumed flipped; each pair's loss is (1 - e) -log sigmoid(beta d) + e -log sigmoid(-beta d), whose optimum is a finite margin, so no pair is pushed without end (the paper's 0.1; 0: plain DPO; the ipo and hinge losses do not read it, as in TRL; docs/training-recipe.md, round twenty-two).")
    # Measured on the demo (SmolLM2, cpu preset): DPO alone 0% valid JSON answers; with the SFT term 100% valid JSON,
    # 39% widget and 78% fixture accuracy, at about the same held-out preference accuracy (0.84 vs 0.85).
    loss_type: str = _f("sigmoid,sft", "DPO loss(es) by TRL's names, comma separated: 'sigmoid' alone, or 'sigmoid,sft' to add an SFT term on chosen answers; 'ipo' or 'hinge' instead of 'sigmoid' (the losses the shared-prefix trainer computes).")
    sft_weight: float = _f(1.0, "Weight of the 'sft' loss when loss_type includes it (the sigmoid loss has weight 1).")
    title_weight: float = _f(1.0, "Weight of the answer's title tokens in the 'sft' loss; the decision tokens (widget, fixtures) weigh 1.")
    epochs: float = _f(3.0, "Training epochs (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run the epochs).")
    max_minutes: float = _f(0, "Time budget of the whole run in minutes, from the base model's load (0: none). When the planned steps no longer fit, the run ends at the last step that does, with the learning-rate schedule and the held-out checks fitted to it; the best checked adapter is kept, and the log and the run's metrics say so.")
    batch_size: int = _f(4, "Pairs per device per step.")
    gradient_accumulation_steps: int = _f(1, "Steps whose gradients add up before one optimizer step.")
    max_length: int = _f(1024, "Longest prompt+answer in tokens; pairs that do not fit are dropped and counted, never truncated.")
    max_train_pairs: int = _f(0, "Train on at most this many pairs, spread over scenarios (0: all).")
    max_train_scenarios: int = _f(0, "Train on the pairs of at most this many scenarios (0: all); cheaper per pair than spreading pairs thin, since a scenario's pairs share one prompt.")
    balance_widgets: bool = _f(False, "Choose training scenarios round-robin over their right widget, so every widget is taught about equally often.")
    load_in_4bit: bool = _f(False, "4-bit QLoRA through bitsandbytes (NVIDIA GPU only).")
    bf16: bool = _f(False, "bfloat16 compute: bf16 weights on a GPU; autocast over fp32 weights on a CPU with AMX, fp32 on one without (bf16 is slower than fp32 with AVX512-BF16 alone).")
    gradient_checkpointing: bool = _f(False, "Recompute activations to save memory (slower).")
    prompt_gradient_tokens: int = _f(-1, "How many of each prompt's last tokens a DPO step back-propagates through (-1: all). k >= 1: the prompt (the batch's common prefix included) runs forward with the adapter but without gradient up to its last k tokens, which run with gradient with the answers (1: only the last, whose hidden state predicts the answers' first token); the log-probs, the loss and the metrics are unchanged, the gradient leaves out what reaches the adapter through the earlier tokens' keys and values (the stop-gradient Transformer-XL puts on its memory). 1 made the cpu preset's 270 steps 28% cheaper on a 2-core Zen 4 EPYC (14.2 minutes instead of 19.6) and cost 6 of 158 natural widget questions at seed 42; DPO, one process, no gradient checkpointing (docs/training-recipe.md, round twenty-seven).")
    precompute_ref_log_probs: bool = _f(True, "Compute the reference model's log-probs once per row instead of at every step: the eval set's before training, a training row's at the step that first trains it (DPO in one process; KTO and multi-process runs compute all before training).")
    warmup_ratio: float = _f(0.1, "Share of steps for learning-rate warmup.")
    logging_steps: int = _f(5, "Log metrics every N steps.")
    eval_steps: float = _f(0, "Evaluate every N steps; below 1, every such share of the training steps (0.25: four evaluations, the last one at the end); 0: at the end of each epoch.")
    save_steps: int = _f(50, "Save a resumable checkpoint every N steps.")
    max_eval_pairs: int = _f(64, "Evaluate during training on at most this many eval pairs (0: all).")
    pick_eval_scenarios: int = _f(0, "At each evaluation, generate constrained answers for this many held-out scenarios and keep the adapter with the best widget + fixture accuracy instead of the last (0: keep the last).")
    average_adapter_from: float = _f(0, "With pick_eval_scenarios: from this share of the training steps on, keep the running mean of the adapter's weights after every step (stochastic weight averaging, SWA); at the end the mean is checked like a checkpoint and kept when it scores within one question of the best check (0: off).")
    confusion_weighting: float = _f(0, "Confusion-weighted sampling: at the end of every epoch but the last, the model answers (constrained) a seeded sample of confusion_check_scenarios training questions, and the next epoch draws each question's pairs in proportion to 1 + this x (1 - the recall of its widget in that check), so the widgets the model confuses are trained on more often (0: off; docs/training-recipe.md, round twenty-four).")
    confusion_check_scenarios: int = _f(96, "With confusion_weighting: how many training questions the check between epochs asks.")
    widget_spread_batches: bool = _f(False, "Order each epoch's questions so that every widget's are spread evenly over its batches (each widget's k-th of n questions at about (k + u) / n of the epoch, u random) instead of shuffled together, so no stretch of steps, the last ones included, leans to a few widgets (docs/training-recipe.md, round twenty-five).")
    seed: int = _f(42, "Random seed for data order, split and adapter init.")
    split_seed: int = _f(-1, "Seed of the train/eval split alone (-1: seed's). Runs that differ in seed but share this hold out the same questions, so soup_adapters can average their adapters into one whose held-out split none of them trained on.")
    min_samples: int = _f(50, "Fewest preference pairs worth training on.")
    eval_fraction: float = _f(0.2, "Share of scenarios held out for evaluation.")
    kind: str = _f("both", "Which pairs: widget, fixture or both.", choices=("widget", "fixture", "both"))
    max_pairs_per_scenario: int = _f(4, "Cap on pairs of each kind per scenario, so no scenario dominates.")
    chosen_agrees_with_corrections: bool = _f(True, "Where ratings of a question carry corrected picks, a pair's chosen answer is an up-rated pick a correction names (when one does): an up the raters' own corrections contradict is more likely a slip than a second right answer.")
    hard_widget_negatives: bool = _f(False, "Widget pairs reject, where there is a choice, the widgets the chosen fixtures are most often up-rated with elsewhere (a trend vs. a current value of one sensor), which only the question's wording rules out.")
    hard_fixture_negatives: bool = _f(False, "Fixture pairs reject, where there is a choice, the down-rated pick whose written answer departs from the chosen one latest (the same first fixtures, then one fewer: a scatter plot of one measurement), so the pairs teach whether to go on after the first fixture, not only which comes first.")
    balanced_widget_negatives: bool = _f(False, "Widget pairs reject, where there is a choice (and after hard_widget_negatives' rule), the widget that has so far been chosen most often more than rejected (correction pairs counted), so every widget is pushed up about as often as down: DPO's pushes on the widget token otherwise add up to a shift of the widgets' prior.")
    offered_fixture_negatives: bool = _f(False, "Fixture pairs reject, where there is a choice (and after hard_fixture_negatives' rule), a down-rated pick whose fixtures the prompt's shortlist offers, the best ranked first: the competitor the model could write, not a source the answer schema already rules out.")
    follow_retriever: bool = _f(False, "Train only on pairs (and up-rated KTO rows) whose chosen answer's first fixture is the prompt's shortlist's first: the model learns to keep the retriever's order rather than to overrule it, which a small model does wrongly more often than rightly on questions phrased unlike its training (docs/training-recipe.md, round ten). The held-out split keeps every pair.")
    chosen_fixtures_first: bool = _f(False, "Training pairs' prompts list their chosen answer's fixtures first in the shortlist (the rest in BM25's order, every answer written in that order): the ratings teach the widget and how many fixtures, the retriever's order which ones, so the model keeps the order it is asked with (BM25 and word embeddings) on questions phrased unlike its training. The run ranks with BM25 alone; DPO pairs only; the held-out split keeps BM25's order (docs/training-recipe.md, round nineteen).")
    question_word_dropout: float = _f(0.0, "Share of the words of each training prompt's question left out (the same ones for a question in every pair and run; at least three kept), a regularizer against answering from one keyword; the shortlist stays the one retrieved for the whole question, and held-out prompts are whole (0: off; docs/training-recipe.md, round fourteen).")
    policy_negatives: bool = _f(False, "With init_adapter: each training pair's rejected answer is, of the question's down-rated picks that the pair's kind allows, the one that adapter finds likeliest (its own likeliest mistake: on-policy negatives, iterative DPO with the ratings as the judge) instead of the formatter's choice. Held-out pairs keep the formatter's.")
    kto_min_pairs: int = _f(50, "With algo=auto: fewer true pairs than this trains KTO on unpaired ratings instead.")

    def validate(self) -> None:
        super().validate()
        if self.neftune_noise_alpha < 0:
            raise ConfigError(f"neftune_noise_alpha must be 0 (off) or positive, got {self.neftune_noise_alpha}.")
        if self.max_minutes < 0:
            raise ConfigError(f"max_minutes must be 0 (no budget) or positive, got {self.max_minutes}.")
        if self.split_seed < -1:
            raise ConfigError(f"split_seed must be -1 (the run's seed) or a seed, got {self.split_seed}.")
        if self.prompt_gradient_tokens != -1 and self.prompt_gradient_tokens < 1:
            raise ConfigError(f"prompt_gradient_tokens must be -1 (every prompt token) or at least 1, got {self.prompt_gradient_tokens}.")
        if self.prompt_gradient_tokens != -1 and self.gradient_checkpointing:
            raise ConfigError("prompt_gradient_tokens needs the prefix cache, which gradient checkpointing turns off; use one of them.")
        if self.chosen_fixtures_first and self.question_word_dropout:
            raise ConfigError("chosen_fixtures_first and question_word_dropout each rewrite the training prompts; use one of them.")
        if not 0 <= self.question_word_dropout < 1:
            raise ConfigError(f"question_word_dropout must be at least 0 and below 1, got {self.question_word_dropout}.")
        if not 0 < self.lora_layer_share <= 1:
            raise ConfigError(f"lora_layer_share must be above 0 and at most 1, got {self.lora_layer_share}.")
        if not 0 <= self.title_weight <= 1:
            raise ConfigError(f"title_weight must be between 0 and 1, got {self.title_weight}.")
        if self.eval_steps < 0 or (self.eval_steps > 1 and self.eval_steps != int(self.eval_steps)):
            raise ConfigError(f"eval_steps must be 0, a share of the training steps below 1, or a whole number of steps; got {self.eval_steps}.")
        for name in ("lora_rank", "lora_alpha", "batch_size", "gradient_accumulation_steps", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.learning_rate <= 0 or self.beta <= 0:
            raise ConfigError("learning_rate and beta must be positive.")
        if not 0 <= self.average_adapter_from < 1:
            raise ConfigError(f"average_adapter_from must be 0 (off) or a share of the steps below 1, got {self.average_adapter_from}.")
        if self.confusion_weighting < 0 or self.confusion_check_scenarios <= 0:
            raise ConfigError(f"confusion_weighting must be 0 (off) or positive and confusion_check_scenarios positive, got {self.confusion_weighting} and {self.confusion_check_scenarios}.")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be at least 0 and below 0.5, got {self.label_smoothing}.")
        if self.lora_init == "eva" and self.init_adapter:
            raise ConfigError("lora_init eva starts a fresh adapter; init_adapter continues a trained one: use one of them.")
        if self.policy_negatives and not self.init_adapter:
            raise ConfigError("policy_negatives needs init_adapter: the rejected answers are that adapter's likeliest mistakes.")
        if self.init_adapter and not is_adapter_folder(self.init_adapter):
            raise ConfigError(f"init_adapter {self.init_adapter!r} is not a trained adapter: expected a run's final/ folder with adapter_config.json.")
        unknown_losses = set(self.loss_types) - set(DPO_LOSSES)
        if unknown_losses:
            raise ConfigError(f"Unknown or unsupported loss type(s): {', '.join(sorted(unknown_losses))}; the trainer computes {', '.join(DPO_LOSSES)}.")

    @property
    def held_out_seed(self) -> int:
        """The seed that draws the train/eval split."""
        return self.seed if self.split_seed < 0 else self.split_seed

    @property
    def loss_types(self) -> list[str]:
        return [part.strip() for part in self.loss_type.split(",") if part.strip()]

    @property
    def loss_weights(self) -> list[float]:
        return [self.sft_weight if name == "sft" else 1.0 for name in self.loss_types]


# The DPO losses the shared-prefix trainer (rl/training/prefix_sharing.py) computes, by TRL's names; TRL's others
# (robust, apo_zero, ...) are refused here, before a run starts, rather than when its trainer is built.
DPO_LOSSES = ("sigmoid", "sft", "ipo", "hinge")

# The recipe of docs/training-recipe.md, chosen there by held-out pick accuracy: DPO + SFT with the title's tokens
# down-weighted, training scenarios balanced over their right widget, fixture pairs that reject the pick departing latest
# (round five), the adapter with the best held-out pick accuracy kept.
RECIPE: dict[str, Any] = {"title_weight": 0.2, "balance_widgets": True, "max_pairs_per_scenario": 2, "hard_fixture_negatives": True}


# Each preset is the fields it changes from TrainingConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # 16 GB+ GPU: a 1-8B instruct model in bf16 with LoRA on all linear layers.
    "default": {**RECIPE, "bf16": True, "batch_size": 4, "gradient_accumulation_steps": 2, "epochs": 3.0,
                "eval_steps": 100, "pick_eval_scenarios": 64},
    # 8-12 GB GPU: 4-bit QLoRA, batch 1 with accumulation, gradient checkpointing; a 3B-class model such as
    # Qwen/Qwen2.5-3B-Instruct or meta-llama/Llama-3.2-3B-Instruct (pass --base-model).
    "small_gpu": {**RECIPE, "load_in_4bit": True, "bf16": True, "batch_size": 1, "gradient_accumulation_steps": 8,
                  "gradient_checkpointing": True, "lora_rank": 8, "lora_alpha": 16, "eval_steps": 100, "pick_eval_scenarios": 48},
    # 24 GB+ GPU: larger rank, more epochs, lower learning rate.
    "high_quality": {**RECIPE, "bf16": True, "lora_rank": 64, "lora_alpha": 128, "epochs": 5.0, "learning_rate": 2e-5,
                     "batch_size": 8, "gradient_accumulation_steps": 2, "eval_steps": 100, "pick_eval_scenarios": 96},
    # No GPU (these machines, the demo): SmolLM2-135M, bf16 autocast where a timed matmul at start-up says bf16 is faster
    # (rl/core/cpu_precision.py; fp32 elsewhere); variant P of
    # docs/training-recipe.md: every scenario (the demo's 376; the cap bounds the online learner's retrains as ratings
    # grow), one pair of each kind per scenario, adapters on the top half of the layers; learning rate 2e-3 since round
    # seven (1e-3 before); 2 epochs since round ten (1.5 before; train_dpo about 10 minutes on 2 cores without AMX);
    # training prompts with the chosen fixtures first since round nineteen; conservative DPO (label smoothing 0.1) since
    # round twenty-two.
    "cpu": {**RECIPE, "bf16": True, "batch_size": 8, "epochs": 2.0, "max_steps": -1, "learning_rate": 2e-3, "lora_rank": 16, "lora_alpha": 32,
            "lora_target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "lora_layer_share": 0.5,
            "max_train_scenarios": 400, "max_pairs_per_scenario": 1, "logging_steps": 5, "eval_steps": 0.25, "save_steps": 60,
            "max_eval_pairs": 16, "pick_eval_scenarios": 24, "warmup_ratio": 0.05, "chosen_fixtures_first": True,
            "label_smoothing": 0.1},
}


def training_config(name: str = "default", **overrides: Any) -> TrainingConfig:
    """The preset `name`, then Django's RL_TRAINING_OVERRIDES, then `overrides` (flags) on top."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.")
    try:
        from django.conf import settings

        from_settings = dict(getattr(settings, "RL_TRAINING_OVERRIDES", {}) or {})
    except Exception:
        from_settings = {}
    return TrainingConfig().replace(**PRESETS[name]).replace(**from_settings).replace(**overrides)


@dataclass
class OnlineLearningConfig(SettingsBase):
    """When the online learner retrains, how a candidate is judged, and what it may do with the result.

    Django settings override fields with RL_ONLINE_LEARNING = {"field": value}; `ENABLE_ONLINE_LEARNING` switches
    the whole learner on (cron ticks do nothing while it is off)."""

    KIND = "online-learning setting"

    min_samples_to_retrain: int = _f(100, "New usable ratings (since the last trained run's watermark) that make a retrain due.")
    max_buffer_size: int = _f(10_000, "Most new ratings one run takes in: with more waiting, the run's watermark stops at the oldest this many and the rest wait for the next run (which is then due at once). Every run still trains on all earlier ratings too.")
    retrain_interval_hours: float = _f(24.0, "A retrain is also due this long after the last trained run if any new rating waits, however few.")
    auto_export: bool = _f(True, "Export a candidate that passed its gate to GGUF (merge, quantize, verify).")
    auto_deploy: bool = _f(False, "Make an exported, verified candidate that passed its gate the live model (Ollama alias).")
    deploy_mode: str = _f("replace", "How a candidate that passed its gate goes live (with auto_deploy): replace (it replaces the live model at once) or ab (it becomes an A/B arm answering ab_share of requests; later ticks promote it when its served up-rate is better by a one-sided Fisher exact test at ab_alpha, or retire it when it is worse, or when ab_max_ratings pass without evidence). Nothing live: it goes live at once either way.", choices=("replace", "ab"))
    ab_share: float = _f(0.2, "deploy_mode ab: the share of requests the candidate arm answers.")
    ab_min_ratings: int = _f(50, "deploy_mode ab: usable ratings of the candidate's served picks before any decision.")
    ab_max_ratings: int = _f(400, "deploy_mode ab: with this many and no evidence either way, the candidate is retired and the live model keeps all traffic.")
    ab_alpha: float = _f(0.05, "deploy_mode ab: one-sided significance level of the better and worse tests.")
    preset: str = _f("cpu", "Training preset for retraining (RL_TRAINING_OVERRIDES applies on top).")
    warm_start: bool = _f(True, "Retrain from the live model's adapter (continue training it) rather than from a fresh one; a fresh adapter when nothing trained is live. Either way the scenarios rated since the last run are trained first, older ones fill the preset's max_train_scenarios.")
    warm_start_learning_rate_scale: float = _f(1.0, "A warm-started retrain's learning rate is the preset's times this (in (0, 1]): an adapter that already learned the picks is moved in smaller steps than a fresh one, so it keeps what it knows while it learns from new ratings.")
    algo: str = _f("auto", "dpo, kto, or auto: DPO on preference pairs, or KTO on pairs and unpaired thumbs together when unpaired thumbs are a large share.", choices=("dpo", "kto", "auto"))
    gate_sets: str = _f("held_out,natural", "Evaluation sets the gate compares on, comma separated: held_out (the candidate's eval split) and/or natural (the natural set's gate part, evalsets/natural; its sealed part cannot be named here).")
    gate_eval_limit: int = _f(0, "Score at most this many pairs and scenarios of the held-out split (0: all); the natural set's gate part is always scored whole. The same data for candidate and live model.")
    gate_rule: str = _f("paired", "How the gate decides. paired: item by item on the same questions, pooled over the gate sets: the primary metric must be better by an exact one-sided McNemar test at gate_alpha, and fixture, preference and valid-pick accuracy no worse than their margins by a paired bootstrap 95% interval. margins (the old rule): fixed margins on each set's accuracies (gate_min_widget_gain and the tolerances).", choices=("paired", "margins"))
    gate_primary_metric: str = _f("widget", "The paired rule's primary metric, which must be better: widget or fixture (constrained accuracy); the other one joins the no-worse checks.", choices=("widget", "fixture"))
    gate_alpha: float = _f(0.05, "The paired rule's significance level for the primary metric (one-sided exact McNemar test on the discordant items).")
    gate_fixture_margin: float = _f(0.10, "The paired rule: constrained fixture accuracy (when not the primary metric) may be at most this much worse: the lower end of the paired 95% interval of candidate - live must lie above -margin. Sized by bench/gate_calibration.py: at 0.05 an equally good candidate fails this check on gate sets of 100 to 200 items about half the time (the interval is about +-0.055 wide there), so a gate could only promote on several hundred items; at 0.10 a candidate truly 10 points worse is still refused (99%), while one 10 points better on widget with 10 points fewer right fixtures gets about as many picks fully right (widget and fixture) as the live model.")
    gate_widget_margin: float = _f(0.10, "The paired rule with gate_primary_metric fixture: the same no-worse margin for widget accuracy.")
    gate_preference_margin: float = _f(0.07, "The paired rule: the same for preference accuracy on the held-out pairs (its interval is narrower: hundreds of pairs).")
    gate_valid_margin: float = _f(0.02, "The paired rule: the same for the valid-pick rate.")
    gate_min_widget_gain: float = _f(0.02, "The margins rule: the candidate's constrained widget accuracy must beat the live model's by at least this, on every gate set.")
    gate_fixture_tolerance: float = _f(0.02, "The margins rule: constrained fixture accuracy may fall at most this far below the live model's.")
    gate_preference_tolerance: float = _f(0.02, "The margins rule: preference accuracy on held-out pairs may fall at most this far below the live model's.")
    gate_min_valid_rate: float = _f(0.95, "Share of constrained answers that must parse to a pick from the prompt's catalog and shortlist.")
    max_new_tokens: int = _f(ANSWER_TOKEN_LIMIT, "Answer length limit when generating picks for the gate (rl.core.prompts.ANSWER_TOKEN_LIMIT: above the longest answer the schema allows).")
    quantization: str = _f("q4_k_m", "GGUF quantization of an exported candidate.")
    verify_pick: bool = _f(True, "Export verification requires the quantized model to answer a test question with a parseable pick.")
    model_name: str = _f("cc-widget-selector", "Ollama model name of candidates (tagged with their run name).")
    live_alias: str = _f("cc-widget-selector:live", "The Ollama name Command Center asks; activation points it at the live version.")
    heartbeat_seconds: float = _f(30.0, "How often a running online run records that it is alive.")
    stale_after_minutes: float = _f(30.0, "A running online run whose heartbeat is older than this is taken for dead and marked failed.")

    def validate(self) -> None:
        super().validate()
        if self.min_samples_to_retrain < 1 or self.max_buffer_size < self.min_samples_to_retrain:
            raise ConfigError("min_samples_to_retrain must be at least 1 and max_buffer_size at least min_samples_to_retrain.")
        unknown_sets = set(self.gate_set_names) - {"held_out", "natural"}
        if unknown_sets or not self.gate_set_names:
            raise ConfigError(f"gate_sets must name held_out and/or natural, got {self.gate_sets!r}.")
        if not 0 < self.warm_start_learning_rate_scale <= 1:
            raise ConfigError(f"warm_start_learning_rate_scale must be in (0, 1], got {self.warm_start_learning_rate_scale}.")
        if self.preset not in PRESETS:
            raise ConfigError(f"Unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}.")
        if not 0 < self.ab_share < 1 or not 0 < self.ab_alpha < 1 or not 0 < self.ab_min_ratings <= self.ab_max_ratings:
            raise ConfigError("ab_share and ab_alpha must be between 0 and 1, and 0 < ab_min_ratings <= ab_max_ratings.")
        if not 0 < self.gate_alpha < 1 or min(self.gate_fixture_margin, self.gate_widget_margin, self.gate_preference_margin, self.gate_valid_margin) < 0:
            raise ConfigError("gate_alpha must be between 0 and 1 and the gate margins at least 0.")
        if self.heartbeat_seconds <= 0 or self.stale_after_minutes * 60 <= 2 * self.heartbeat_seconds:
            raise ConfigError("stale_after_minutes must be longer than two heartbeats.")

    @property
    def gate_set_names(self) -> list[str]:
        return [part.strip() for part in self.gate_sets.split(",") if part.strip()]


def online_learning_config(**overrides: Any) -> OnlineLearningConfig:
    """The defaults, then Django's RL_ONLINE_LEARNING, then `overrides`."""
    from django.conf import settings

    return OnlineLearningConfig().replace(**dict(getattr(settings, "RL_ONLINE_LEARNING", {}) or {})).replace(**overrides)


SERVING_ENGINES = ("ollama", "llama_cpp", "vllm")
OPENAI_ENGINES = ("llama_cpp", "vllm")  # the engines asked through the OpenAI chat-completions API


@dataclass
class ServingConfig(SettingsBase):
    """How picks are served (`rl/serving/picks.py`, `POST /api/picks/`) and where versions are registered
    (`rl/deploy/engines.py`). Django's RL_SERVING = {"field": value}."""

    KIND = "serving setting"

    engine: str = _f("ollama", "The serving engine. ollama: Ollama's API at OLLAMA_HOST, a merged GGUF per version. llama_cpp: llama.cpp's OpenAI-compatible server at OPENAI_BASE_URL, a GGUF per version in the models file RL_LLAMA_CPP_MODELS_FILE. vllm: vLLM's OpenAI-compatible server at OPENAI_BASE_URL, each version's LoRA adapter loaded at run time on the shared base.", choices=SERVING_ENGINES)
    schema_format: str = _f("auto", "How the answer schema goes to an OpenAI-compatible engine: json_schema (the OpenAI form: vLLM, SGLang, llama.cpp's C++ llama-server), json_object (`{\"type\": \"json_object\", \"schema\": ...}`: llama-cpp-python's server, which refuses the other), or auto (json_object for llama_cpp, json_schema otherwise).", choices=("auto", "json_schema", "json_object"))
    logprobs: bool = _f(True, "Ask an OpenAI-compatible engine for token log-probabilities and store the chosen widget's probability with the entry (its confidence).")

    ab_candidate: str = _f("", "A model version (name:tag, as activate_model takes it) that answers a share of requests besides the live one; empty: no A/B.")
    ab_share: float = _f(0.0, "Share of requests (0 to 1) the A/B candidate answers, chosen by a hash of the request, so one request always goes the same way.")
    timeout_seconds: float = _f(30.0, "How long to wait for the engine's answer before giving up (HTTP 504).")
    temperature: float = _f(0.0, "Sampling temperature sent to the engine; 0 is greedy, the same pick for the same question.")
    max_tokens: int = _f(ANSWER_TOKEN_LIMIT, "Answer length limit (Ollama's num_predict, the OpenAI API's max_tokens); a pick is about 40 tokens, the longest the answer schema allows (3 fixtures, a 60-character title) 118 for the demo's catalog (rl.core.prompts.ANSWER_TOKEN_LIMIT).")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.ab_share <= 1.0:
            raise ConfigError(f"ab_share must be between 0 and 1, got {self.ab_share}.")
        if self.ab_share > 0 and not self.ab_candidate:
            raise ConfigError("ab_share is above 0 but no ab_candidate is named.")
        if self.timeout_seconds <= 0 or self.max_tokens < 16:
            raise ConfigError("timeout_seconds must be positive and max_tokens at least 16.")

    @property
    def api(self) -> str:
        """The protocol picks are asked in: `ollama` or `openai`."""
        return "openai" if self.engine in OPENAI_ENGINES else "ollama"

    @property
    def openai_schema_format(self) -> str:
        if self.schema_format != "auto":
            return self.schema_format
        return "json_object" if self.engine == "llama_cpp" else "json_schema"

    def engine_url(self) -> str:
        """Where the engine listens: OLLAMA_HOST for Ollama, OPENAI_BASE_URL (ending in /v1) for the others."""
        from django.conf import settings

        return settings.OPENAI_BASE_URL if self.api == "openai" else settings.OLLAMA_HOST


def serving_config(**overrides: Any) -> ServingConfig:
    """The defaults, then Django's RL_SERVING, then `overrides`."""
    from django.conf import settings

    return ServingConfig().replace(**dict(getattr(settings, "RL_SERVING", {}) or {})).replace(**overrides)


def config_field_help(config_class: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(config_class)}
