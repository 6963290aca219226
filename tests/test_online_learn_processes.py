"""Two `online_learn` processes released at the same moment against one database (a SQLite file; in make test's
PostgreSQL pass, a fresh PostgreSQL database): exactly one trains, and the other sees its claim."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.databases import query_database, seed_demo_database
from tests.rl_cases import FAST

ROOT = Path(__file__).resolve().parent.parent
# A process that has loaded Django and the learner, then waits on stdin: released together, two of them reach
# online_learn's claim at the same moment, with no start-up time between them.
READY_THEN_RUN = ("import sys, django; django.setup(); import rl.loop.online_learner; "
                  "from django.core.management import execute_from_command_line; print('ready', flush=True); sys.stdin.readline(); "
                  "execute_from_command_line(['manage.py', 'online_learn'])")


@pytest.mark.database_processes
def test_two_online_learn_processes_started_together_run_exactly_one_training(tmp_path, tiny_model_dir, process_database_url):
    env = {
        **os.environ, "DATABASE_URL": process_database_url, "RL_CHECKPOINT_DIR": str(tmp_path / "runs"),
        "ENABLE_ONLINE_LEARNING": "true", "OMP_NUM_THREADS": "1",
        "RL_TRAINING_OVERRIDES": json.dumps({"base_model": str(tiny_model_dir), **FAST, "max_steps": 2, "eval_fraction": 0.5}),
        "RL_ONLINE_LEARNING": json.dumps({"min_samples_to_retrain": 1, "gate_sets": "held_out", "gate_eval_limit": 2,
                                          "max_new_tokens": 16, "auto_export": False}),
    }
    seed_demo_database(env)

    workers = [subprocess.Popen([sys.executable, "-c", READY_THEN_RUN], env={**env, "DJANGO_SETTINGS_MODULE": "backend.settings"}, cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready"
    began = time.monotonic()
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    training_runs = query_database(process_database_url, "SELECT count(*) FROM rl_trainingrun")[0][0]
    online_runs = [tuple(row) for row in query_database(process_database_url, "SELECT status, trained_at IS NOT NULL FROM rl_onlinerun")]
    assert training_runs == 1, outputs
    assert [(status, bool(trained)) for status, trained in online_runs] == [("succeeded", True)], outputs
    trained = [out for out in outputs if ": claimed (" in out]
    # the other tick met the first one's claim: in progress, or (the insert raced and lost) just finished; never "not due"
    skipped = [out for out in outputs if "Another online run is in progress" in out or "Another online run just finished" in out]
    assert len(trained) == 1 and len(skipped) == 1, outputs
    assert not any("No retrain due" in out for out in outputs), outputs
    print(f"two processes, one training, {time.monotonic() - began:.0f} s; the other said: {skipped[0].strip().splitlines()[-1]}")
