"""The house's shape as tests: import-linter's contracts hold (.importlinter), each contract breaks when the rule it
states is broken, and no module imports another module's private names."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / ".importlinter"
PACKAGES = ("rl", "feedback", "backend")


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    """import-linter on the packages under `where`, with the repository's contracts."""
    executable = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(executable), str(CONTRACTS), "--no-cache", "--no-logo"], cwd=where, capture_output=True,
                          text=True, env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """The Python files of the project's packages, copied to a folder the test may change."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.html", "*.css", "*.js"))
    return tmp_path


def test_the_repository_keeps_every_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "added_import", "broken_contract", "arrow"), [
    ("rl/core/prompts.py", "from rl.loop import online_learner", "each imports only the stages below it", "rl.core.prompts -> rl.loop.online_learner"),
    ("rl/evaluation/metrics.py", "from rl.training import trainer", "each imports only the stages below it", "rl.evaluation.metrics -> rl.training.trainer"),
    ("rl/training/run.py", "from rl.export import exporter", "each imports only the stages below it", "rl.training.run -> rl.export.exporter"),
    ("rl/deploy/registry.py", "from rl import dashboard", "never import rl's Django face", "rl.deploy.registry -> rl.dashboard"),
    ("feedback/models.py", "import rl.models", "feedback never imports rl", "feedback.models -> rl.models"),
    ("rl/serving/picks.py", "from rl.simulated import ollama", "imported by no production code", "rl.serving.picks -> rl.simulated.ollama"),
])
def test_a_contract_breaks_when_its_rule_is_broken(source_copy, module, added_import, broken_contract, arrow):
    assert lint_imports(source_copy).returncode == 0  # the copy as it is keeps them all
    with open(source_copy / module, "a") as code:
        code.write(f"\n{added_import}  # the import the contract forbids\n")
    result = lint_imports(source_copy)
    assert result.returncode == 1, result.stdout
    broken = result.stdout.split("Broken contracts")[1]
    assert broken_contract in broken and arrow in broken


def private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_names():
    files = [p for folder in (*PACKAGES, "bench") for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts]
    assert len(files) > 80
    assert [found for path in files for found in private_imports(path)] == []


def test_the_private_name_check_sees_a_private_import(tmp_path):
    module = ROOT / "rl" / "core" / "_probe_for_test.py"
    try:
        module.write_text("from rl.core.shared_prefix import _hidden\n")
        assert private_imports(module) == ["rl/core/_probe_for_test.py:1 rl.core.shared_prefix._hidden"]
    finally:
        module.unlink()
