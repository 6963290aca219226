"""`train_dpo --dry-run` on the full demo with the real SmolLM2 tokenizer."""
import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from feedback.demo import build_demo
from feedback.services import feedback_import

pytestmark = pytest.mark.integration


@pytest.fixture
def full_demo(db):
    # Noise-free ratings, so shortlist recall measures the shortlist and not the simulated rater's wrong up-votes
    # (with the demo's 5% noise, 92.9% of up-votes and 95.0% of majority-up picks are in the shortlist).
    feedback_import(*build_demo(noise=0.0))


def test_dry_run_on_the_demo_meets_the_prompt_and_recall_targets(full_demo, tmp_path):
    out = StringIO()
    call_command("train_dpo", "--config", "cpu", "--dry-run", "--dump-dataset", str(tmp_path), stdout=out)
    text = out.getvalue()
    table = dict(re.findall(r"^(.+?)\s{2,}(.+)$", text, flags=re.M))
    assert int(table["widget pairs"]) >= 200 and int(table["fixture pairs"]) >= 200
    assert table["scenarios in both train and eval"] == "0"
    _min, median, _max = (int(x) for x in table["prompt tokens min / median / max"].split(" / "))
    assert median <= 400
    assert float(table["fixture shortlist recall (up-rated picks)"].rstrip("%")) >= 95
    train_rows = [json.loads(line) for line in (tmp_path / "dpo_train.jsonl").read_text().splitlines()]
    eval_rows = [json.loads(line) for line in (tmp_path / "dpo_eval.jsonl").read_text().splitlines()]
    assert not {r["scenario_id"] for r in train_rows} & {r["scenario_id"] for r in eval_rows}


def test_dry_run_with_too_few_pairs_exits_with_the_reason(db):
    with pytest.raises(CommandError, match="Too few preference pairs"):
        call_command("train_dpo", "--dry-run", "--min-samples", "50")
