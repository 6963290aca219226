"""Training spread over two CPU processes (gloo) with `accelerate launch`, on the tiny model.

The batch sampler deals every pair to exactly one process per epoch; the reference log-probs are computed once,
split across the processes, and shared; a resumed run feeds the same pairs as an uninterrupted one and ends with
the same adapter; only the main process writes the run folder, metrics and the TrainingRun row.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from accelerate.data_loader import BatchSamplerShard

from rl.training.sampler import PromptGroupedBatchSampler
from tests.databases import query_database, seed_demo_database

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE_CONFIGS = ROOT / "deploy" / "accelerate"
PYTHON = Path(sys.executable)


def accelerate_launch(*args: str, env: dict) -> subprocess.CompletedProcess:
    """`accelerate launch` with the shipped two-process CPU configuration, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(PYTHON.parent / "accelerate"), "launch", "--config_file", str(ACCELERATE_CONFIGS / "cpu-2proc.yaml"),
               "--main_process_port", str(port), *args]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.mark.parametrize(("name", "distributed_type", "zero_stage"), [
    ("cpu-2proc", "MULTI_GPU", None), ("ddp", "MULTI_GPU", None), ("deepspeed-zero2", "DEEPSPEED", 2), ("deepspeed-zero3", "DEEPSPEED", 3),
])
def test_the_shipped_accelerate_configurations_load(name, distributed_type, zero_stage):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == distributed_type and config.num_processes >= 2
    assert (config.deepspeed_config or {}).get("zero_stage") == zero_stage


@pytest.mark.parametrize("processes", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_every_pair_goes_to_exactly_one_process_per_epoch(processes, batch_size):
    for n_pairs in range(processes, 30):
        keys = [row // 3 for row in range(n_pairs)]  # three pairs per prompt
        sampler = PromptGroupedBatchSampler(keys, batch_size, seed=1, num_processes=processes)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            shards = [list(BatchSamplerShard(sampler, processes, rank)) for rank in range(processes)]
            dealt = Counter(row for shard in shards for batch in shard for row in batch)
            assert dealt == Counter(range(n_pairs)), (n_pairs, shards)
            assert len({len(shard) for shard in shards}) == 1  # each process takes as many optimizer steps
            assert all(batch for shard in shards for batch in shard)
            assert max(len(batch) for shard in shards for batch in shard) <= max(batch_size, -(-n_pairs // len(sampler)))


def test_a_prompt_s_pairs_stay_together_and_epochs_reshuffle():
    keys = [row // 4 for row in range(40)]
    sampler = PromptGroupedBatchSampler(keys, 4, seed=3, num_processes=2)
    first = list(sampler)
    assert all(len({keys[row] for row in batch}) == 1 for batch in first)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(PromptGroupedBatchSampler(keys, 4, seed=3, num_processes=2, epoch_of=lambda: 1)) == list(sampler)


def test_more_processes_than_pairs_is_a_clear_error():
    with pytest.raises(ValueError, match="3 training pairs cannot be shared by 4 processes"):
        PromptGroupedBatchSampler([0, 0, 1], 2, seed=0, num_processes=4)


def seeded_environment(database_url: str, tmp_path: Path) -> dict:
    """Environment for processes on a migrated demo database of their own, with runs under tmp_path."""
    env = {**os.environ, "DATABASE_URL": database_url, "RL_CHECKPOINT_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    seed_demo_database(env)
    return env


def test_two_processes_train_each_pair_once_share_reference_log_probs_and_resume_exactly(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    env = seeded_environment(f"sqlite:///{tmp_path / 'feedback.sqlite3'}", tmp_path)
    pairs = 13  # odd: the last round of batches is uneven
    accelerate_launch("tests/distributed_harness.py", str(tmp_path / "whole"), str(tiny_model_dir), str(pairs), env=env)
    records = [json.loads((tmp_path / "whole" / f"record-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["processes"] for r in records] == [2, 2]
    steps = len(records[0]["batches"])
    assert steps == len(records[1]["batches"]) == 8  # 2 epochs of 4 steps
    for epoch in (0, 1):
        dealt = Counter(key for r in records for batch in r["batches"][epoch * 4 : (epoch + 1) * 4] for key in batch)
        assert len(dealt) == pairs and set(dealt.values()) == {1}, dealt
    # Reference log-probs: each process computed part of them (accelerate pads the last round; those are dropped) and
    # both trained with the same full table.
    assert records[0]["reference"] == records[1]["reference"] and len(records[0]["reference"]) == pairs
    computed = [set(r["reference_keys"]) for r in records]
    assert computed[0] | computed[1] == set(records[0]["reference"]) and len(computed[0]) < pairs
    # Padding fills the last round of batches: fewer than batch_size (2) x processes (2) extra rows.
    assert len(records[0]["reference_keys"]) + len(records[1]["reference_keys"]) <= pairs + 2 * 2 - 1
    assert (tmp_path / "whole" / "final" / "adapter_model.safetensors").is_file()
    assert len([line for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]) == steps

    # Resume from the checkpoint of step 6, in the middle of the second epoch.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-6", resumed / "checkpoints" / "checkpoint-6")
    accelerate_launch("tests/distributed_harness.py", str(resumed), str(tiny_model_dir), str(pairs), "--resume", env=env)
    for rank in (0, 1):
        again = json.loads((resumed / f"record-{rank}-resumed.json").read_text())
        assert again["batches"] == records[rank]["batches"][6:]
    whole, after_resume = (load_file(str(folder / "final" / "adapter_model.safetensors")) for folder in (tmp_path / "whole", resumed))
    assert whole.keys() == after_resume.keys()
    assert all((whole[name] - after_resume[name]).abs().max().item() < 1e-6 for name in whole)


@pytest.mark.database_processes
def test_train_dpo_under_accelerate_writes_one_run_and_resumes(tmp_path, tiny_model_dir, process_database_url):
    env = seeded_environment(process_database_url, tmp_path)
    train = ["manage.py", "train_dpo", "--config", "cpu", "--base-model", str(tiny_model_dir), "--max-steps", "4", "--save-steps", "2",
             "--batch-size", "2", "--max-train-pairs", "12", "--max-eval-pairs", "4", "--logging-steps", "1", "--eval-steps", "0",
             "--pick-eval-scenarios", "0", "--min-samples", "10", "--run-name", "two-processes"]
    done = accelerate_launch(*train, env=env)
    assert done.stdout.count("status: succeeded") == 1, done.stdout  # one report, from the main process
    folder = tmp_path / "runs" / "two-processes"
    assert query_database(process_database_url, "SELECT name, status FROM rl_trainingrun") == [("two-processes", "succeeded")]
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == [1, 2, 3, 4]  # written once, not once per process
    assert (folder / "final" / "adapter_model.safetensors").is_file() and (folder / "config.json").is_file()

    # Interrupted after step 2: resume with two processes continues from checkpoint-2 and finishes the same row.
    shutil.rmtree(folder / "final")
    shutil.rmtree(folder / "checkpoints" / "checkpoint-4")
    query_database(process_database_url, "UPDATE rl_trainingrun SET status = 'interrupted'")
    done = accelerate_launch("manage.py", "train_dpo", "--resume", "two-processes", env=env)
    assert done.stdout.count("status: succeeded") == 1, done.stdout
    assert query_database(process_database_url, "SELECT name, status FROM rl_trainingrun") == [("two-processes", "succeeded")]
    state = json.loads((folder / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (folder / "final" / "adapter_model.safetensors").is_file()
