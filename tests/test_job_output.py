"""What long work prints when nobody watches a terminal (cron, make demo > log): a log line every few steps, no
progress bars, no FutureWarning; and the closing summary of a run."""
import logging
import os
import subprocess
import sys
import warnings

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from rl.core.console import quiet_third_party
from rl.evaluation.evaluation_run import evaluate_model
from rl.training.run import run_training
from tests.rl_cases import data, tiny_config


def test_off_a_terminal_training_and_evaluation_log_lines_draw_no_bars_and_warn_nothing(demo_db, tiny_model_dir, checkpoints, capfd, caplog):
    caplog.set_level(logging.INFO, logger="rl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()  # what the rl app installs: only the known third-party warnings are held back
        result = run_training(tiny_config(tiny_model_dir, max_steps=4, logging_steps=2), data(), preset="cpu", run_name="quiet")
        evaluate_model(checkpoint="quiet", compare_base=True, limit=3, max_new_tokens=4)
    assert result.status == "succeeded", result.error
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []
    err = capfd.readouterr().err
    assert "%|" not in err and "it/s]" not in err  # no tqdm bar of ours, the Trainer's, TRL's or the datasets library's
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert steps[-1].startswith("step 4/4 (100%): loss ") and "s/step" in steps[-1] and len(steps) >= 2


def test_off_a_terminal_a_third_party_bar_opened_without_a_disable_argument_draws_nothing():
    # as transformers' GGUF dequantization opens its bar; a fresh interpreter, as the rl app is set up before tqdm loads
    code = ("import django; django.setup(); from tqdm.auto import tqdm\n"
            "for _ in tqdm(range(50), desc='Converting and de-quantizing GGUF tensors...'): pass")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "backend.settings"}
    env.pop("TQDM_DISABLE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=settings.BASE_DIR, check=True)
    assert "de-quantizing" not in done.stderr and "it/s]" not in done.stderr


def test_the_run_report_gathers_every_set_base_adapter_and_gguf_the_gate_and_the_phase_minutes(db, tmp_path, capsys):
    from rl.models import ModelVersion, TrainingRun

    def scores(widget):
        return {"constrained_widget_accuracy": widget, "constrained_fixture_accuracy": 0.5, "preference_accuracy": 0.75,
                "constrained_valid_pick_rate": 1.0, "n_scenarios": 120}

    def evaluated(base, tuned, tuned_model="adapter (final)"):
        return {"data": {}, "models": {"tuned": tuned_model}, "base": base, "tuned": tuned}

    held_out = evaluated(scores(0.2), scores(0.7))
    run = TrainingRun.objects.create(name="r", status="succeeded", evaluation={
        "natural-sealed": evaluated(scores(0.1), scores(0.6)), "held_out": held_out,
        "gate:natural": {"constrained_widget_accuracy": 0.9}, "gate_cache": {"base": {"k": scores(0.3)}, "candidate": {}}})
    # the export copied the adapter's held-out results; the sealed part was evaluated through the GGUF itself
    ModelVersion.objects.create(name="cc", tag="r", quantization="q4_k_m", training_run=run, evaluation={
        "held_out": held_out, "natural-sealed": evaluated(None, scores(0.55), "gguf (model-q4_k_m.gguf)")},
        gate={"passed": True, "reasons": ["widget: candidate right where live was wrong on 14 items"]})
    phases = tmp_path / "phases.tsv"
    phases.write_text("train\t600\nevaluate natural (sealed)\t150\n")
    call_command("run_report", "r", "--phases", str(phases))
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["held_out", "(120", "q.)", "adapter", "0.700", "0.500", "0.750", "1.000"] in rows
    assert ["natural-sealed", "(120", "q.)", "GGUF", "q4_k_m", "0.550", "0.500", "0.750", "1.000"] in rows
    assert out.index("held_out") < out.index("natural-sealed") and "gate:natural" not in out and "gate_cache" not in out
    assert sum(row[:4] == ["held_out", "(120", "q.)", "GGUF"] for row in rows) == 0  # a copy of the adapter's is no GGUF row
    assert "gate of cc:r: passed" in out and "wrong on 14 items" in out
    assert ["train", "10.0"] in rows and ["total", "12.5"] in rows


def test_the_run_report_refuses_an_unknown_run_or_a_missing_phases_file(db, tmp_path):
    with pytest.raises(CommandError, match="No training run named 'nope'"):
        call_command("run_report", "nope")
    from rl.models import TrainingRun

    TrainingRun.objects.create(name="r", status="succeeded")
    with pytest.raises(CommandError, match="No phases file"):
        call_command("run_report", "r", "--phases", str(tmp_path / "missing.tsv"))


def test_off_a_terminal_a_long_run_logs_about_twenty_step_lines_the_first_and_last_among_them(caplog):
    from types import SimpleNamespace

    from rl.training.callbacks import step_log_callback, step_log_interval

    assert step_log_interval(4, 2) == 2 and step_log_interval(201, 5) == 15 and step_log_interval(100, 5) == 5
    callback = step_log_callback()
    args, state = SimpleNamespace(logging_steps=5), SimpleNamespace(is_world_process_zero=True, max_steps=201, global_step=0)
    callback.on_train_begin(args, state, None)
    caplog.set_level(logging.INFO, logger="rl.training.callbacks")
    for step in [1, *range(5, 201, 5), 201]:
        state.global_step = step
        callback.on_log(args, state, None, logs={"loss": 0.5})
    logged = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records if r.getMessage().startswith("step ")]
    assert logged == [1, *range(15, 201, 15), 201]
