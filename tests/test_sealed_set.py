"""The natural set's sealed part is out of reach of every decision: no gate, training, recipe or serving code imports
or names it; only evaluate_model --natural sealed reads it."""
import json
from pathlib import Path

import grimp
import pytest
from django.core.management import call_command

from rl.core.config import ConfigError, online_learning_config
from rl.data.sealed import SEALED_DATA_FILE, SEALED_DIR

ROOT = Path(__file__).resolve().parent.parent
READERS = {"rl.data.sealed", "rl.management.commands.evaluate_model"}


def test_no_module_but_evaluate_model_reaches_the_sealed_part_by_any_chain_of_imports():
    graph = grimp.build_graph("rl", "feedback", "backend")
    reaching = [module for module in sorted(graph.modules) if module not in READERS
                and graph.find_shortest_chain(importer=module, imported="rl.data.sealed") is not None]
    assert reaching == []
    assert graph.find_shortest_chain(importer="rl.management.commands.evaluate_model", imported="rl.data.sealed")


def test_no_code_bench_or_script_names_the_sealed_folder():
    """Benches and scripts are not packages import-linter sees; nor would a path written out be an import."""
    allowed = {ROOT / "rl" / "data" / "sealed.py", ROOT / "rl" / "management" / "commands" / "evaluate_model.py",
               ROOT / "scripts" / "demo.sh",  # make demo's report: the other reader
               ROOT / "bench" / "mutations.json"}  # the deliberate break that proves the import test fails
    sources = [*ROOT.glob("rl/**/*.py"), *ROOT.glob("feedback/**/*.py"), *ROOT.glob("backend/**/*.py"), *ROOT.glob("bench/*"),
               *ROOT.glob("scripts/*"), ROOT / "Makefile"]
    naming = [str(p.relative_to(ROOT)) for p in sources if p.is_file() and p not in allowed
              and any(s in p.read_text(errors="replace") for s in (SEALED_DIR.name, "rl.data.sealed", "SEALED_"))]
    assert naming == []


@pytest.mark.parametrize("gate_sets", ["natural-sealed", "held_out,sealed", "natural,natural-sealed"])
def test_a_gate_cannot_be_set_to_score_it(gate_sets):
    with pytest.raises(ConfigError, match="gate_sets"):
        online_learning_config(gate_sets=gate_sets)


def test_gate_scoring_knows_no_set_by_that_name():
    from rl.evaluation.gate_scoring import gate_evalsets

    with pytest.raises(ValueError, match="Unknown gate set"):
        gate_evalsets(None, {}, [SEALED_DIR.name], 0)


def test_evaluate_model_natural_sealed_scores_it_and_records_it_under_its_own_name(tiny_run, tmp_path):
    from rl.models import TrainingRun

    output = tmp_path / "sealed.json"
    call_command("evaluate_model", "--checkpoint", tiny_run, "--natural", "sealed", "--limit", "3", "--decoding", "free",
                 "--max-new-tokens", "4", "--output", str(output))
    results = json.loads(output.read_text())
    assert results["data"]["data_file"] == str(SEALED_DATA_FILE) and results["tuned"]["n_scenarios"] == 3
    assert TrainingRun.objects.get(name="tiny").evaluation[SEALED_DIR.name]["tuned"]["n_pairs"] == 3
