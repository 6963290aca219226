"""CommandCenterDPOTrainer and train_dpo on a tiny random Llama (SmolLM2's tokenizer)."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from transformers import TrainerCallback

from rl.core.base_model import BaseModelError, resolve_base_model
from rl.core.config import ConfigError, training_config
from rl.data.dataset_builder import prepare_training_dataset
from rl.models import TrainingRun
from rl.training import trainer as trainer_module
from rl.training.run import run_training
from rl.training.sampler import first_epoch_order
from rl.training.trainer import CommandCenterDPOTrainer
from tests.rl_cases import FAST, data, tiny_config

ROOT = Path(__file__).resolve().parent.parent


def test_training_lowers_the_dpo_loss_on_its_pairs(demo_db, tiny_model_dir, tmp_path):
    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": 20, "learning_rate": 1e-2,
                                                "loss_type": "sigmoid"})
    outcome = trainer.train(train, train, output_dir=tmp_path)
    losses = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = next(row["loss"] for row in losses if "loss" in row)
    assert first == pytest.approx(0.6931, abs=1e-3)  # a fresh LoRA adapter is the reference: loss = ln 2
    assert outcome.eval_metrics["eval_loss"] < first - 0.03  # clearly lower on the pairs it trained on
    assert outcome.eval_metrics["eval_rewards/accuracies"] > 0.5


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_the_shared_prefix_is_cached_or_packed_and_training_learns_either_way(demo_db, tiny_model_dir, tmp_path, gradient_checkpointing):
    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": 10, "learning_rate": 1e-2,
                                                "loss_type": "sigmoid", "gradient_checkpointing": gradient_checkpointing})
    outcome = trainer.train(train, train, output_dir=tmp_path)
    assert trainer._prefix_sharing_collator().prefix_cache is not gradient_checkpointing
    assert outcome.eval_metrics["eval_loss"] < 0.6931 - 0.01


@pytest.mark.parametrize(("share", "layers"), [(0.5, {"1"}), (1.0, {"0", "1"})])
def test_lora_layer_share_adapts_only_the_top_layers_and_training_still_learns(demo_db, tiny_model_dir, tmp_path, share, layers):
    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": 20, "learning_rate": 1e-2,
                                                "loss_type": "sigmoid", "lora_layer_share": share})
    outcome = trainer.train(train, train, output_dir=tmp_path)
    adapted = {name.split(".layers.")[1].split(".")[0] for name in _adapter_weights(outcome.final_dir)}
    assert adapted == layers  # of the tiny model's two layers, the top share
    assert outcome.eval_metrics["eval_loss"] < 0.6931 - 0.01


def test_the_sft_term_raises_the_likelihood_of_chosen_answers(demo_db, tiny_model_dir, tmp_path):
    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))

    def chosen_logps_after(steps: int, learning_rate: float) -> float:
        trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": steps, "learning_rate": learning_rate,
                                                    "loss_type": "sigmoid,sft", "sft_weight": 1.0})
        return trainer.train(train, train, output_dir=tmp_path / str(steps)).eval_metrics["eval_logps/chosen"]

    untrained = chosen_logps_after(1, 1e-12)  # one step that changes nothing: the starting model on the same pairs
    assert chosen_logps_after(12, 1e-2) > untrained + 5


def _adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("reference", ["base", "adapter"])
def test_training_can_continue_from_a_trained_adapter(demo_db, tiny_model_dir, tmp_path, reference):
    import torch

    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    settings_ = {**FAST, "base_model": str(tiny_model_dir), "max_steps": 6, "learning_rate": 1e-2, "loss_type": "sigmoid"}
    first = CommandCenterDPOTrainer("cpu", **settings_).train(train, output_dir=tmp_path / "first")
    trained = _adapter_weights(first.final_dir)
    assert any(name.endswith("lora_B.weight") and tensor.abs().max() > 0 for name, tensor in trained.items())

    # One step at a learning rate too small to move anything: the adapter it saves is the one it started from, alone
    # (no copy of the reference beside it). Its first loss is ln 2 and its rewards 0 exactly when the reference is that
    # starting adapter; with the base model as reference, which the trained policy already departs from, the rewards
    # are not 0 (the loss can still be near ln 2, when chosen and rejected answers moved alike).
    continued = CommandCenterDPOTrainer("cpu", **{**settings_, "max_steps": 1, "learning_rate": 1e-12, "init_adapter": str(first.final_dir),
                                                  "init_adapter_reference": reference}).train(train, output_dir=tmp_path / "second")
    again = _adapter_weights(continued.final_dir)
    assert again.keys() == trained.keys()
    assert all(torch.allclose(again[name], trained[name], atol=1e-6) for name in trained)
    assert sorted(path.name for path in continued.final_dir.iterdir() if path.is_dir()) == []
    rows = [json.loads(line) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    first_step = next(row for row in rows if "loss" in row)
    if reference == "adapter":
        assert first_step["loss"] == pytest.approx(0.6931, abs=1e-4)
        assert first_step["rewards/chosen"] == pytest.approx(0, abs=1e-4) and first_step["rewards/rejected"] == pytest.approx(0, abs=1e-4)
    else:
        # Ten times the tolerance within which the adapter-as-reference rewards above are 0.
        assert abs(first_step["rewards/chosen"]) > 1e-3 and abs(first_step["rewards/rejected"]) > 1e-3

    fresh = CommandCenterDPOTrainer("cpu", **{**settings_, "max_steps": 1, "learning_rate": 1e-12}).train(train, output_dir=tmp_path / "third")
    assert all(tensor.abs().max() < 1e-6 for name, tensor in _adapter_weights(fresh.final_dir).items() if name.endswith("lora_B.weight"))


@pytest.mark.parametrize("spread", [False, True])
def test_first_epoch_order_is_the_order_the_trainer_s_batches_draw_the_rows_given(demo_db, tiny_model_dir, tmp_path, monkeypatch, spread):
    from rl.training.confusion import chosen_widgets

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(24))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, batch_size=4, widget_spread_batches=spread))
    trainer.load_base_model()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))  # else ./runs
    dpo = trainer._dpo_trainer(train, None, tmp_path)
    drawn = [int(index) for batch in dpo.get_train_dataloader() for index in batch["pair_index"]]
    rows = dpo.train_dataset
    assert sorted(drawn) == list(range(len(rows))) and drawn != sorted(drawn)
    # The rows as another trainer would be given them: prompts in another order, a prompt's rows in theirs.
    by_prompt: dict[tuple, list[int]] = {}
    for index, prompt in enumerate(rows["prompt_ids"]):
        by_prompt.setdefault(tuple(prompt), []).append(index)
    given = [index for indices in reversed(list(by_prompt.values())) for index in indices]
    assert len(by_prompt) > 2 and given != sorted(given)
    labels = chosen_widgets(trainer.tokenizer, [rows[index]["chosen_ids"] for index in given]) if spread else None
    order = first_epoch_order([rows[index]["prompt_ids"] for index in given], 4, dpo.args.seed, labels)
    assert [given[k] for k in order] == drawn


def test_with_the_starting_adapter_as_reference_its_copy_stays_frozen_while_the_adapter_learns(demo_db, tiny_model_dir, tmp_path):
    import torch

    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    settings_ = {**FAST, "base_model": str(tiny_model_dir), "max_steps": 4, "learning_rate": 1e-2, "loss_type": "sigmoid"}
    first = CommandCenterDPOTrainer("cpu", **settings_).train(train, output_dir=tmp_path / "first")
    started = _adapter_weights(first.final_dir)
    seen = {}

    class ReferenceWatcher(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            seen["trainable"] = sorted({name.split(".")[-2] for name, p in model.named_parameters() if p.requires_grad})
            seen["ref"] = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if ".ref." in name}

    outcome = CommandCenterDPOTrainer("cpu", **{**settings_, "max_steps": 6, "init_adapter": str(first.final_dir),
                                                "init_adapter_reference": "adapter"}).train(
        train, train, output_dir=tmp_path / "second", callbacks=[ReferenceWatcher()])
    assert seen["trainable"] == ["default"]
    reference = {name.replace(".ref.", "."): tensor for name, tensor in seen["ref"].items()}
    assert reference.keys() == started.keys()
    assert all(torch.equal(reference[name], started[name]) for name in started)
    learned = _adapter_weights(outcome.final_dir)
    assert any(not torch.allclose(learned[name], started[name]) for name in started)
    assert outcome.eval_metrics["eval_rewards/accuracies"] > 0.5


def test_an_init_adapter_that_is_not_an_adapter_is_refused_before_anything_is_written(demo_db, tiny_model_dir, tmp_path, checkpoints):
    with pytest.raises(ConfigError, match="init_adapter"):
        training_config("cpu", init_adapter=str(tmp_path))
    with pytest.raises(CommandError, match="init_adapter"):
        call_command("train_dpo", "--config", "cpu", "--base-model", str(tiny_model_dir), "--init-adapter", str(tmp_path))
    assert not TrainingRun.objects.exists() and not checkpoints.exists()


def test_a_run_leaves_its_folder_and_row_complete(demo_db, tiny_model_dir, checkpoints):
    result = run_training(tiny_config(tiny_model_dir), data(), preset="cpu", run_name="tiny-run")
    assert result.status == "succeeded", result.error
    folder = checkpoints / "tiny-run"
    config = json.loads((folder / "config.json").read_text())
    assert config["config"]["base_model"] == str(tiny_model_dir)
    assert {"torch", "transformers", "trl", "peft"} <= set(config["libraries"])
    assert config["dataset_stats"]["scenario_overlap"] == 0 and "git_commit" in config
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected", "learning_rate"} <= set(train_rows[-1])
    assert any("eval_rewards/accuracies" in r for r in rows)
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert (folder / "final" / "adapter_model.safetensors").is_file()
    assert (folder / "final" / "tokenizer.json").is_file()
    assert (folder / "dataset" / "train").is_dir() and (folder / "dataset" / "eval").is_dir()
    assert list((folder / "checkpoints").glob("checkpoint-*"))
    run = TrainingRun.objects.get(name="tiny-run")
    assert run.status == "succeeded" and run.adapter_dir == str(folder / "final")
    assert run.data_watermark is not None and run.finished_at is not None
    assert "eval_rewards/accuracies" in run.metrics


def test_a_run_past_its_time_budget_ends_early_keeps_its_adapter_and_says_so(demo_db, tiny_model_dir, checkpoints, caplog):
    # 0.06 s: spent before the first step ends (the model's load alone takes longer), so the run stops after it.
    config = tiny_config(tiny_model_dir, max_steps=20, max_minutes=0.001)
    with caplog.at_level(logging.WARNING, logger="rl.training.time_budget"):
        result = run_training(config, data(), preset="cpu", run_name="tiny-budget")
    assert result.status == "succeeded", result.error
    budget = result.metrics["time_budget"]
    assert budget["shortened"] and budget["planned_steps"] == 20 and budget["steps"] == 1
    assert (checkpoints / "tiny-budget" / "final" / "adapter_model.safetensors").is_file()
    assert "the run ended at step 1 of the 20 planned" in caplog.text
    assert TrainingRun.objects.get(name="tiny-budget").metrics["time_budget"]["steps"] == 1


def test_ctrl_c_saves_a_checkpoint_marks_the_run_interrupted_and_resume_finishes_it(demo_db, tiny_model_dir, checkpoints, monkeypatch):
    original = trainer_module.metrics_callback

    class CtrlCAtStep3(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "metrics_callback", lambda path: _both(original(path), CtrlCAtStep3()))
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(tiny_model_dir, max_steps=6, save_steps=100), data(), preset="cpu", run_name="stopped")
    run = TrainingRun.objects.get(name="stopped")
    assert run.status == "interrupted" and "--resume stopped" in run.error
    assert (checkpoints / "stopped" / "checkpoints" / "checkpoint-3").is_dir()

    monkeypatch.setattr(trainer_module, "metrics_callback", original)
    # Ratings that arrive meanwhile do not change the interrupted run's data: it resumes on its saved dataset.
    from feedback.models import Rating

    Rating.objects.filter(value="down").update(value="up")
    result = run_training(tiny_config(tiny_model_dir), data(), preset="cpu", resume="stopped")
    assert result.status == "succeeded", result.error
    steps = [json.loads(line)["step"] for line in (checkpoints / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6 and 4 in steps
    assert TrainingRun.objects.get(name="stopped").status == "succeeded"


def _both(first, second):
    class Both(TrainerCallback):
        def on_log(self, *args, **kwargs):
            first.on_log(*args, **kwargs)

        def on_step_end(self, *args, **kwargs):
            second.on_step_end(*args, **kwargs)

    return Both()


def test_kto_trains_on_pairs_and_unpaired_ratings_with_balanced_weights(demo_db, tiny_model_dir, checkpoints, caplog):
    with caplog.at_level(logging.INFO, logger="rl.training.trainer"):
        result = run_training(tiny_config(tiny_model_dir, algo="kto", max_steps=2), data(), preset="cpu", run_name="kto-run")
    assert result.status == "succeeded", result.error
    assert result.metrics["algo"] == "kto"
    assert (checkpoints / "kto-run" / "final" / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (checkpoints / "kto-run" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    # A side's rewards are logged only for steps whose batch holds that side (as TRL's KTOTrainer does), so the keys
    # are looked for over the steps.
    assert steps and {"kl", "rewards/chosen", "rewards/rejected", "count/chosen", "count/rejected"} <= set().union(*steps)
    assert "desirable_weight" in caplog.text and "don't seem to be in an ideal range" not in caplog.text


def test_auto_picks_dpo_when_pairs_are_plenty_and_dominate_and_kto_otherwise(caplog):
    trainer = CommandCenterDPOTrainer("cpu", algo="auto", kto_min_pairs=50)
    with caplog.at_level(logging.INFO, logger="rl.training.trainer"):
        assert trainer.choose_algo(n_pairs=300, n_kto_rows=80) == "dpo"
        assert trainer.choose_algo(n_pairs=80, n_kto_rows=300) == "kto"  # production: mostly single thumbs
        assert trainer.choose_algo(n_pairs=10, n_kto_rows=300) == "kto"
        assert trainer.choose_algo(n_pairs=10, n_kto_rows=0) == "dpo"
    assert "KTO on both" in caplog.text


def test_a_gpu_preset_on_a_cpu_without_bf16_says_so_and_runs_fp32(caplog, monkeypatch):
    monkeypatch.setattr("rl.training.trainer.cpu_bf16_is_faster", lambda: False)
    monkeypatch.setattr("rl.training.trainer.has_cuda", lambda: False)
    with caplog.at_level(logging.WARNING, logger="rl.training.trainer"):
        trainer = CommandCenterDPOTrainer("small_gpu")
    assert not trainer.config.bf16 and not trainer.config.load_in_4bit
    assert len([r for r in caplog.records if "4-bit" in r.message]) == 1
    assert len([r for r in caplog.records if "training in fp32" in r.message]) == 1


def test_the_base_model_loads_without_hub_kernels(tiny_model_dir):
    """transformers turns Hub kernels on by default where `kernels` is installed; on a GPU `model.train()` then fetches
    them from the Hub (refused offline and as untrusted remote code), which failed train_dpo's first step on CUDA."""
    from rl.core.base_model import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir))
    model.train()
    assert model.use_kernels is False


def test_bf16_on_a_cpu_with_amx_is_autocast_over_bf16_frozen_linears_and_fp32_adapters(tiny_model_dir, monkeypatch):
    import torch
    from peft import get_peft_model

    monkeypatch.setattr("rl.training.trainer.cpu_bf16_is_faster", lambda: True)
    monkeypatch.setattr("rl.training.trainer.has_cuda", lambda: False)
    trainer = CommandCenterDPOTrainer("small_gpu", base_model=str(tiny_model_dir))
    assert trainer.config.bf16 and not trainer.config.load_in_4bit
    trainer.load_base_model()
    dtypes = {name: p.dtype for name, p in get_peft_model(trainer.model, trainer.lora_config()).named_parameters()}
    assert {dtypes[n] for n in dtypes if "lora_" in n} == {torch.float32}  # what training updates stays fp32
    assert {dtypes[n] for n in dtypes if n.endswith("proj.weight") or "base_layer" in n} == {torch.bfloat16}
    assert dtypes["base_model.model.model.embed_tokens.weight"] == torch.float32  # autocast does not cast a lookup
    # The LM head, tied to the embeddings in the file, is given its own bf16 copy (autocast would cast it at every call).
    assert trainer.model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert trainer.model.get_output_embeddings().weight.data_ptr() != trainer.model.get_input_embeddings().weight.data_ptr()


@pytest.mark.parametrize("bf16", [False, True])
def test_the_reference_runs_only_a_prefix_s_new_tokens_in_fp32_and_the_whole_prefix_in_bf16(demo_db, tiny_model_dir, tmp_path, monkeypatch, bf16):
    # In bf16 a prefix run in two pieces rounds otherwise than one run whole, as the policy runs it: on SmolLM2 the
    # eval rewards of a fresh adapter (policy = reference) came out -0.006 on 32 pairs instead of 0.
    from rl.core.shared_prefix import ReusedPrefix

    monkeypatch.setattr("rl.training.trainer.cpu_bf16_is_faster", lambda: True)
    reuse_asked: list[bool] = []
    cache = ReusedPrefix.cache
    monkeypatch.setattr(ReusedPrefix, "cache", lambda self, *args, **kwargs: reuse_asked.append(kwargs["reuse"]) or cache(self, *args, **kwargs))
    pairs = prepare_training_dataset("db", min_samples=10).dataset
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, bf16=bf16))
    trainer.load_base_model()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))  # else ./runs
    dpo = trainer._dpo_trainer(pairs["train"].select(range(8)), pairs["eval"], tmp_path)  # the eval set's reference pass
    assert dpo.args.bf16 is bf16
    assert reuse_asked and set(reuse_asked) == {not bf16}


def test_frozen_linears_in_bf16_give_autocast_the_same_logits_and_gradients(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.training.adapter import frozen_linears_to_bf16

    results = []
    for cast in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if cast:
            assert frozen_linears_to_bf16(model) == 15  # 7 linears in each of 2 layers, and the LM head
        torch.manual_seed(1)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
        ids = torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(2))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids).logits.float()
            logits.logsumexp(-1).mean().backward()
        results.append((logits.detach(), [p.grad for p in model.parameters() if p.requires_grad]))
    (logits, grads), (cast_logits, cast_grads) = results
    assert torch.equal(logits, cast_logits)  # autocast casts each weight to exactly these bf16 values
    assert all(torch.equal(a, b) for a, b in zip(grads, cast_grads)) and any(g.abs().max() > 0 for g in grads)


def _file_mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def test_after_the_cast_to_bf16_no_weight_is_left_in_the_files_memory_map(tiny_model_dir):
    import gc

    from transformers import AutoModelForCausalLM

    from rl.training.adapter import frozen_linears_to_bf16

    weights_file = Path(tiny_model_dir) / "model.safetensors"

    def in_the_map(model) -> int:
        ranges = _file_mapped_ranges(weights_file.resolve())
        return sum(any(lo <= t.data_ptr() < hi for lo, hi in ranges) for t in (*model.parameters(), *model.buffers()))

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert in_the_map(model) > 0  # loaded as views of the file's mapping (what the cast must not leave behind)
    frozen_linears_to_bf16(model)
    gc.collect()
    assert in_the_map(model) == 0
    assert not _file_mapped_ranges(weights_file.resolve())  # nothing holds the mapping: it is gone, and its pages with it


@pytest.mark.parametrize("fp32_ms, bf16_ms, chosen", [(25.0, 10.0, True), (40.0, 27.0, True), (25.0, 22.0, False), (28.0, 51.0, False)])
def test_bf16_is_chosen_when_it_measures_clearly_faster(fp32_ms, bf16_ms, chosen):
    from rl.core.cpu_precision import PrecisionTiming

    timing = PrecisionTiming(fp32_ms / 1e3, bf16_ms / 1e3)
    assert timing.bf16_is_faster is chosen
    assert f"{fp32_ms:.1f} ms in fp32" in timing.describe()


def _cpu_has_native_bf16() -> bool:
    import torch

    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("amx_bf16") or capabilities.get("avx512_bf16"))


@pytest.mark.parametrize("onednn_cap, chosen", [
    ("AVX2", False), ("AVX512_CORE", False),
    pytest.param("ALL", True, marks=pytest.mark.skipif(not _cpu_has_native_bf16(), reason="no AMX or AVX512-BF16 here")),
])
def test_the_measurement_chooses_bf16_only_where_onednn_has_bf16_instructions(onednn_cap, chosen):
    """A real measurement: held below any bf16 instruction, oneDNN emulates bf16 matmuls (2x to 4x slower than fp32
    on the machines this runs on); with AMX or AVX512-BF16 they are faster. oneDNN reads the cap once: a fresh process."""
    import os

    code = "from rl.core.cpu_precision import cpu_bf16_is_faster; print(cpu_bf16_is_faster())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": onednn_cap}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == str(chosen)


def test_a_base_models_fingerprint_changes_with_its_weights_and_only_then(tmp_path):
    from rl.core.base_model import base_model_fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    first = base_model_fingerprint(str(folder))
    assert base_model_fingerprint(str(folder)) == first
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert base_model_fingerprint(str(folder)) != first


def test_an_unknown_preset_or_setting_is_a_clear_error():
    with pytest.raises(ConfigError, match="Unknown preset 'huge'"):
        training_config("huge")
    with pytest.raises(ConfigError, match="Unknown training setting"):
        training_config("cpu", lora_rnak=4)
    with pytest.raises(ConfigError, match="algo must be one of"):
        training_config("cpu", algo="ppo")


def test_a_missing_base_model_names_what_was_tried(tmp_path):
    with pytest.raises(BaseModelError, match="No base model at .*nothing.gguf"):
        resolve_base_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(BaseModelError, match="has no config.json"):
        resolve_base_model(str(tmp_path))
    with pytest.raises(BaseModelError, match="not a Hugging Face id"):
        resolve_base_model("./models/llama")


def test_train_dpo_with_a_missing_base_model_fails_and_records_nothing(demo_db, tmp_path, checkpoints):
    with pytest.raises(CommandError, match="No base model"):
        call_command("train_dpo", "--config", "cpu", "--base-model", str(tmp_path / "missing.gguf"), "--min-samples", "10")
    assert not TrainingRun.objects.exists()
    assert not checkpoints.exists()


def test_train_dpo_with_too_few_pairs_fails_and_records_nothing(demo_db, tiny_model_dir, checkpoints):
    with pytest.raises(CommandError, match="Too few preference pairs"):
        call_command("train_dpo", "--config", "cpu", "--base-model", str(tiny_model_dir), "--min-samples", "100000")
    assert not TrainingRun.objects.exists()


def test_rows_the_steps_reach_are_whole_scenarios_enough_for_every_step_and_none_when_all_are_reached():
    from rl.training.sampler import rows_the_steps_reach

    keys = [f"s{i // 3}" for i in range(30)]  # ten scenarios of three pairs
    rows = rows_the_steps_reach(keys, max_steps=2, rows_per_step=4, seed=1)
    assert 8 <= len(rows) < 8 + 3 and len(set(rows)) == len(rows)
    chosen = {keys[i] for i in rows}
    assert all(keys.count(key) == sum(keys[i] == key for i in rows) for key in chosen)  # no scenario cut in two
    assert rows != rows_the_steps_reach(keys, max_steps=2, rows_per_step=4, seed=2)
    assert rows_the_steps_reach(keys, max_steps=10, rows_per_step=4, seed=1) is None  # 40 > 30: every row is reached
    assert rows_the_steps_reach(keys, max_steps=-1, rows_per_step=4, seed=1) is None  # epochs, not steps


def test_a_step_capped_run_computes_reference_log_probs_only_for_the_pairs_its_steps_reach(demo_db, tiny_model_dir, tmp_path, monkeypatch):
    from rl.training.prefix_sharing import PrefixSharingDPOTrainer

    referenced = []
    original = PrefixSharingDPOTrainer._precompute_ref_logps

    def counting(self, dataset, name, batch_size):
        referenced.append((name, len(dataset)))
        return original(self, dataset, name, batch_size)

    monkeypatch.setattr(PrefixSharingDPOTrainer, "_precompute_ref_logps", counting)
    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(40))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": 2, "batch_size": 4})
    trainer.train(train, None, output_dir=tmp_path)
    (name, rows), = referenced
    assert name == "train" and 8 <= rows < 40  # two steps of four pairs, whole scenarios: not all 40


def test_a_training_row_s_reference_log_probs_are_computed_at_its_first_step_with_the_adapter_off_and_kept(demo_db, tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from rl.training.prefix_sharing import PrefixSharingDPOTrainer

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(16))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, bf16=False, batch_size=8))
    trainer.load_base_model()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))  # else ./runs
    dpo = trainer._dpo_trainer(train, None, tmp_path)
    assert "ref_chosen_logps" not in dpo.train_dataset.column_names  # nothing computed before the first step
    torch.manual_seed(0)
    for name, parameter in dpo.model.named_parameters():
        if "lora_B" in name:  # a trained adapter: the policy is no longer the reference
            parameter.data.normal_(0, 0.5)
    batch = dpo._prepare_inputs(next(iter(dpo.get_train_dataloader())))
    computed = []
    original = PrefixSharingDPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(PrefixSharingDPOTrainer, "compute_ref_log_probs",
                        lambda self, model, inputs: computed.append(inputs["pair_chosen"].numel()) or original(self, model, inputs))
    with torch.no_grad():
        policy, chosen, rejected = dpo.scored_with_reference(dpo.model, batch)  # the step's first use
    again = dpo.reference_logps(dpo.model, batch)
    assert computed == [batch["pair_chosen"].numel()]  # once, for the batch's pairs; the second call reads what was kept
    assert torch.equal(again[0], chosen) and torch.equal(again[1], rejected)
    assert not torch.allclose(chosen, policy.chosen, atol=1e-3)

    # The same values as the reference pass over the whole dataset before training (adapters off), pair by pair.
    monkeypatch.setattr(PrefixSharingDPOTrainer, "REFERENCE_AT_FIRST_STEP", False)
    before_training = dpo._precompute_ref_logps(dpo.train_dataset, "train", 4)
    by_index = {i: (c, r) for i, c, r in zip(before_training["pair_index"], before_training["ref_chosen_logps"],
                                             before_training["ref_rejected_logps"], strict=True)}
    expected = torch.tensor([by_index[int(i)] for i in batch["pair_index"]], device=chosen.device)
    assert torch.allclose(chosen, expected[:, 0], atol=1e-4) and torch.allclose(rejected, expected[:, 1], atol=1e-4)


def test_a_two_epoch_run_computes_each_training_row_s_reference_once(demo_db, tiny_model_dir, tmp_path, monkeypatch):
    from rl.training.prefix_sharing import PrefixSharingDPOTrainer

    computed = []
    original = PrefixSharingDPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(PrefixSharingDPOTrainer, "compute_ref_log_probs",
                        lambda self, model, inputs: computed.extend(inputs["pair_index"].tolist()) or original(self, model, inputs))
    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(12))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": -1, "epochs": 2, "batch_size": 4})
    outcome = trainer.train(train, None, output_dir=tmp_path)
    assert outcome.train_metrics["epoch"] == pytest.approx(2)
    assert sorted(computed) == list(range(12))


def _same_step_tolerance() -> dict[str, float]:
    """fp32 on a CPU: a step computed row by row and as a whole batch agree to 1e-5. On a GPU the kernels are chosen
    by batch shape, so a row's and the batch's sums of some 400 token log-probs part at fp32's own precision (6e-5 on
    -422 on an H200): relative 1e-6 there."""
    import torch

    return {"abs": 1e-5, "rel": 1e-6} if torch.cuda.is_available() else {"abs": 1e-5}


def _dpo_with_a_trained_adapter(trainer, train, tmp_path, monkeypatch):
    """The trainer's DPO trainer, ready for single `training_step` calls, its adapter's B matrices random (a trained
    adapter: the policy is not the reference)."""
    import torch

    trainer.load_base_model()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))  # else ./runs
    dpo = trainer._dpo_trainer(train, None, tmp_path)
    dpo.create_optimizer_and_scheduler(num_training_steps=1)
    dpo.current_gradient_accumulation_steps = 1  # set by the training loop
    torch.manual_seed(0)
    for name, parameter in dpo.model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    return dpo


@pytest.mark.parametrize("loss_type", ["sigmoid,sft", "ipo", "hinge"])
def test_a_step_run_row_by_row_gives_the_loss_gradient_and_metrics_of_the_whole_batch(demo_db, tiny_model_dir, tmp_path, loss_type, monkeypatch):
    import torch

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(24))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, lora_dropout=0.0, loss_type=loss_type, bf16=False, batch_size=12))
    dpo = _dpo_with_a_trained_adapter(trainer, train, tmp_path, monkeypatch)  # margins well away from 0, which rounding cannot flip
    batch = next(iter(dpo.get_train_dataloader()))
    assert batch["input_ids"].size(0) > 1 and "prefix_ids" in batch  # several prompts after one shared prefix

    def step(row_by_row: bool):
        dpo.ROW_BY_ROW_BACKWARD = row_by_row
        assert dpo._backward_row_by_row(batch) == row_by_row
        dpo.model.zero_grad()
        dpo._metrics["train"].clear()
        loss = dpo.training_step(dpo.model, dict(batch))
        grads = torch.cat([p.grad.flatten() for p in dpo.model.parameters() if p.grad is not None])
        return loss, grads, {k: v[-1] for k, v in dpo._metrics["train"].items() if k != "num_tokens"}

    whole_loss, whole_grads, whole_metrics = step(False)
    row_loss, row_grads, row_metrics = step(True)
    assert whole_grads.abs().sum() > 0
    assert float(row_loss) == pytest.approx(float(whole_loss), abs=1e-5)
    assert torch.allclose(row_grads, whole_grads, atol=1e-5, rtol=1e-4)
    assert row_metrics == pytest.approx(whole_metrics, **_same_step_tolerance())


def test_a_step_that_computes_its_rows_reference_starts_the_policy_s_rows_at_the_first_adapted_layer(demo_db, tiny_model_dir, tmp_path, monkeypatch):
    import torch

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(24))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, lora_dropout=0.0, bf16=False, batch_size=12,
                                                                  lora_layer_share=0.5))
    dpo = _dpo_with_a_trained_adapter(trainer, train, tmp_path, monkeypatch)
    assert trainer.adapted_layers() == [1]  # the cpu preset's top half of the tiny model's two layers
    batch = next(iter(dpo.get_train_dataloader()))
    assert batch["input_ids"].size(0) > 1 and "prefix_ids" in batch and "pair_index" in batch
    lower_calls: list[int] = []
    dpo._unwrapped_causal_lm(dpo.model).model.layers[0].register_forward_hook(lambda module, args, output: lower_calls.append(1))

    def step(row_by_row: bool):
        dpo.ROW_BY_ROW_BACKWARD = row_by_row
        dpo.model.zero_grad()
        dpo._metrics["train"].clear()
        del lower_calls[:]
        loss = dpo.training_step(dpo.model, dict(batch))
        grads = torch.cat([p.grad.flatten() for p in dpo.model.parameters() if p.grad is not None])
        return loss, grads, {k: v[-1] for k, v in dpo._metrics["train"].items() if k != "num_tokens"}, len(lower_calls)

    # The first step of these rows computes their reference: layer 0 runs for the reference's prefix and rows, not for
    # the policy's prefix and rows, which start at layer 1 from the reference's input to it.
    row_loss, row_grads, row_metrics, row_calls = step(True)
    assert row_calls == 2
    # Again, reading the kept reference: the policy's rows run from their tokens (prefix and the batch of rows).
    whole_loss, whole_grads, whole_metrics, whole_calls = step(False)
    assert whole_calls == 2
    assert whole_grads.abs().sum() > 0
    assert float(row_loss) == pytest.approx(float(whole_loss), abs=1e-5)
    assert torch.allclose(row_grads, whole_grads, atol=1e-5, rtol=1e-4)
    assert row_metrics == pytest.approx(whole_metrics, **_same_step_tolerance())
    # The same rows trained again (a later epoch): no reference pass runs, and the policy's prefix and rows start at
    # layer 1 from the inputs to it kept at their first step.
    assert 0 < len(dpo.kept_layer_inputs) <= int(batch["row_lengths"].sum())  # the rows' tokens by their paths (padding's once)
    again_loss, again_grads, again_metrics, again_calls = step(True)
    assert again_calls == 0
    assert float(again_loss) == pytest.approx(float(whole_loss), abs=1e-5)
    assert torch.allclose(again_grads, whole_grads, atol=1e-5, rtol=1e-4)
    assert again_metrics == pytest.approx(whole_metrics, **_same_step_tolerance())
    # Without the kept inputs the rows run from their tokens again: layer 0 for the prefix and each row.
    dpo.kept_layer_inputs = None
    assert step(True)[3] == 1 + batch["input_ids"].size(0)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_a_step_without_the_prompt_s_gradient_has_the_loss_and_metrics_of_the_whole_step_and_another_gradient(demo_db, tiny_model_dir, tmp_path, monkeypatch, share):
    import torch

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(24))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, lora_dropout=0.0, bf16=False, batch_size=12,
                                                                  lora_layer_share=share, prompt_gradient_tokens=1))
    dpo = _dpo_with_a_trained_adapter(trainer, train, tmp_path, monkeypatch)
    assert dpo.prompt_gradient_tokens == 1
    batch = next(iter(dpo.get_train_dataloader()))
    assert batch["input_ids"].size(0) > 1 and "prefix_ids" in batch and batch["row_groups"].eq(1).all()
    calls = {"frozen": 0}
    from rl.training import prefix_sharing

    frozen_prompt = prefix_sharing.answer_logps_after_frozen_prompt

    def counted(*args, **kwargs):
        calls["frozen"] += 1
        return frozen_prompt(*args, **kwargs)

    monkeypatch.setattr(prefix_sharing, "answer_logps_after_frozen_prompt", counted)

    def step(prompt_gradient_tokens: int):
        dpo.prompt_gradient_tokens = prompt_gradient_tokens
        dpo.model.zero_grad()
        dpo._metrics["train"].clear()
        loss = dpo.training_step(dpo.model, dict(batch))
        grads = torch.cat([p.grad.flatten() for p in dpo.model.parameters() if p.grad is not None])
        return loss, grads, {k: v[-1] for k, v in dpo._metrics["train"].items() if k != "num_tokens"}

    # First step of the rows (their reference pass runs; with share 0.5 the policy starts at layer 1), then again.
    frozen_loss, frozen_grads, frozen_metrics = step(1)
    assert calls["frozen"] == batch["input_ids"].size(0)
    whole_loss, whole_grads, whole_metrics = step(-1)
    assert calls["frozen"] == batch["input_ids"].size(0)
    again_loss, again_grads, again_metrics = step(1)
    assert float(frozen_loss) == pytest.approx(float(whole_loss), abs=1e-5)
    assert frozen_metrics == pytest.approx(whole_metrics, **_same_step_tolerance())
    assert frozen_grads.abs().sum() > 0
    assert (frozen_grads - whole_grads).abs().max() > 1e-3 * whole_grads.abs().max()  # the prompt's share is left out
    assert float(again_loss) == pytest.approx(float(frozen_loss), abs=1e-5)
    assert torch.allclose(again_grads, frozen_grads, atol=1e-5, rtol=1e-4)


def test_training_without_the_prompt_s_gradient_learns(demo_db, tiny_model_dir, tmp_path):
    prepared = prepare_training_dataset("db", min_samples=10)
    train = prepared.dataset["train"].select(range(16))
    trainer = CommandCenterDPOTrainer("cpu", **{**FAST, "base_model": str(tiny_model_dir), "max_steps": 10, "learning_rate": 1e-2,
                                                "loss_type": "sigmoid", "prompt_gradient_tokens": 1})
    outcome = trainer.train(train, train, output_dir=tmp_path)
    assert outcome.eval_metrics["eval_loss"] < 0.6931 - 0.01


def test_prompt_gradient_tokens_other_than_all_or_a_positive_count_or_with_gradient_checkpointing_are_refused():
    with pytest.raises(ConfigError, match="prompt_gradient_tokens"):
        training_config("cpu", prompt_gradient_tokens=1, gradient_checkpointing=True)
    for tokens in (0, -2):
        with pytest.raises(ConfigError, match="prompt_gradient_tokens"):
            training_config("cpu", prompt_gradient_tokens=tokens)


def _row_after_a_prefix(tokens: list[int], positions: list[int], reads: list[list[int]], prefix_length: int, padding: int = 0) -> dict:
    """A row as `row_of_batch` gives it: every token reads the whole prefix and the row's tokens listed in `reads`,
    except the last `padding`, which read only themselves."""
    import torch

    visible = torch.zeros(len(tokens), prefix_length + len(tokens), dtype=torch.bool)
    visible[: len(tokens) - padding, :prefix_length] = True
    for token, read in enumerate(reads):
        visible[token, [prefix_length + r for r in read]] = True
    return {"input_ids": torch.tensor([tokens]), "position_ids": torch.tensor([positions]), "attention_mask": visible[None, None]}


def test_a_token_s_kept_layer_input_is_found_by_the_tokens_it_reads_however_its_row_is_laid_out():
    import torch

    from rl.core.frozen_layers import LayerInput
    from rl.training.kept_layer_inputs import KeptLayerInputs, prefix_key, token_keys

    # Prefix [1, 2]; prompt [3, 4]; answers [5, 6] and [5, 7], which share their first token.
    both = _row_after_a_prefix([3, 4, 5, 6, 7], [2, 3, 4, 5, 5], [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 4]], 2)
    keys = token_keys(prefix_key(torch.tensor([[1, 2]])), both)
    assert len(set(keys)) == 5
    # The second answer alone, after a shorter prefix: its tokens read what they read in `both`.
    alone = _row_after_a_prefix([2, 3, 4, 5, 7], [1, 2, 3, 4, 5], [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]], 1)
    alone_keys = token_keys(prefix_key(torch.tensor([[1]])), alone)
    assert alone_keys[1:] == [keys[0], keys[1], keys[2], keys[4]]
    assert alone_keys[0] not in keys  # token 2 was the prefix's, not the row's
    # Another prefix, or an answer token that reads another answer's, is another path.
    assert token_keys(prefix_key(torch.tensor([[1, 9]])), both)[0] != keys[0]
    # Padding reads only itself, whatever the prefix.
    padded = [_row_after_a_prefix([3, 0], [len(prefix), 0], [[0], [1]], len(prefix), padding=1) for prefix in ([1, 2], [8])]
    assert token_keys(prefix_key(torch.tensor([[1, 2]])), padded[0])[1] == token_keys(prefix_key(torch.tensor([[8]])), padded[1])[1]
    chained = _row_after_a_prefix([3, 4, 5, 6, 7], [2, 3, 4, 5, 6], [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]], 2)
    assert token_keys(prefix_key(torch.tensor([[1, 2]])), chained)[4] != keys[4]

    kept = KeptLayerInputs()
    hidden = torch.randn(2, 5, 4)
    kept.keep(keys, LayerInput(1, hidden[:1]))
    assert kept.row(alone_keys) is None  # one of its tokens was never a row's
    found = kept.row(alone_keys[1:])
    assert found is not None and found.index == 1 and torch.equal(found.hidden[0], hidden[0, [0, 1, 2, 4]])
    kept.keep(alone_keys, LayerInput(1, hidden[1:]))  # only its one new token is added
    assert len(kept) == 6 and kept.nbytes == 6 * 4 * 4
    assert torch.equal(kept.row(alone_keys).hidden[0], torch.cat([hidden[1, :1], hidden[0, [0, 1, 2, 4]]]))


def test_in_a_real_run_a_plan_that_moves_the_check_interval_does_not_check_twice_in_a_row(demo_db, tiny_model_dir, checkpoints, monkeypatch):
    # The budget's plan of 16 steps is cut to 12 at step 2 (a check every 3 steps), then grows to 13 at step 3, where
    # the Trainer checks (3 % 3 == 0); the interval becomes 4, and the Trainer's `step % eval_steps == 0` alone
    # checked again at step 4.
    from rl.training.time_budget import BudgetPlan, TimeBudgetCallback

    def plan(self, args, state):
        return BudgetPlan(steps=16 if state.global_step < 2 else 12 if state.global_step == 2 else 13, step_seconds=0.1, check_seconds=0.1)

    monkeypatch.setattr(TimeBudgetCallback, "_plan", plan)
    original = trainer_module.metrics_callback
    checked_at: list[int] = []

    class Checks(TrainerCallback):
        def __init__(self, metrics):
            self.metrics, self.training = metrics, True

        def on_log(self, *args, **kwargs):
            self.metrics.on_log(*args, **kwargs)

        def on_evaluate(self, args, state, control, **kwargs):
            if self.training:
                checked_at.append(state.global_step)

        def on_train_end(self, *args, **kwargs):
            self.training = False

    monkeypatch.setattr(trainer_module, "metrics_callback", lambda path: Checks(original(path)))
    result = run_training(tiny_config(tiny_model_dir, max_steps=16, eval_steps=0.25, max_minutes=60), data(), preset="cpu",
                          run_name="moving-checks")
    assert result.status == "succeeded", result.error
    assert checked_at == [4, 8, 12, 13]


@pytest.mark.parametrize("alpha", [0.0, 5.0])
def test_neftune_noise_is_on_the_embeddings_of_training_steps_only(demo_db, tiny_model_dir, tmp_path, monkeypatch, alpha):
    import torch

    train = prepare_training_dataset("db", min_samples=10).dataset["train"].select(range(8))
    trainer = CommandCenterDPOTrainer("cpu", config=tiny_config(tiny_model_dir, bf16=False, batch_size=4, max_steps=2,
                                                                 neftune_noise_alpha=alpha))
    trainer.load_base_model()
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))  # else ./runs
    dpo = trainer._dpo_trainer(train, None, tmp_path)
    assert (dpo.kept_layer_inputs is None) == bool(alpha)  # a row's kept input to a layer would hold one draw of the noise
    backbone = dpo.model.get_base_model().model
    looked_up: list[torch.Tensor] = []
    noisy: list[bool] = []
    backbone.embed_tokens.register_forward_hook(lambda module, args, output: looked_up.append(output.detach().clone()))
    backbone.layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: noisy.append(not torch.equal(looked_up[-1], (args[0] if args else kwargs["hidden_states"]))),
        with_kwargs=True)
    dpo.train()
    assert set(noisy) == {bool(alpha)}  # every training forward sees the noise when it is on, none when off
    noisy.clear()
    dpo.model.eval()
    with torch.no_grad():
        dpo.model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    assert noisy == [False]  # the hook is gone after training: evaluation and export see the plain embeddings
