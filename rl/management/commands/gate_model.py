"""`manage.py gate_model`: the deploy gate for a run trained by hand; with --deploy, promote() what passed."""
import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.cli import add_set_flag, parse_overrides
from rl.core.config import ConfigError


class Command(BaseCommand):
    help = (
        "Judge a trained run against the live model (its base when nothing is live) with the online learner's deploy "
        "gate: both scored on the gate sets (RL_ONLINE_LEARNING gate_sets) with constrained decoding, scores reused "
        "where evaluate_model --decoding constrained already made them on identical data. Prints the decision and its "
        "reasons and records it. With --deploy a run that passed is exported (if it has no verified export yet) and "
        "made live. Exit code 0: passed; 1: rejected or failed (the live model is unchanged)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--checkpoint", required=True, help="The run: its name under RL_CHECKPOINT_DIR, or its folder.")
        parser.add_argument("--deploy", action="store_true", help="Make the run live if it passes (register with Ollama, point the live alias).")
        parser.add_argument("--quantization", help="Which export to deploy (default: the online-learning setting, q4_k_m).")
        add_set_flag(parser, example="gate_sets=natural")

    def handle(self, *args, checkpoint: str, deploy: bool, quantization: str | None, set: list[str], **options) -> None:
        from rl.core.config import online_learning_config
        from rl.core.runs import CheckpointError, resolve_checkpoint
        from rl.deploy.engines import RegistrationError
        from rl.deploy.gating import gate_training_run
        from rl.deploy.promote import Outcome, promote, record_gate
        from rl.deploy.registry import RegistryError
        from rl.models import TrainingRun

        try:
            cfg = online_learning_config(**parse_overrides(set))
            adapter_dir, run_config = resolve_checkpoint(checkpoint)
        except (ConfigError, CheckpointError) as exc:
            raise CommandError(str(exc)) from exc
        training_run = TrainingRun.objects.filter(name=(run_config or {}).get("run", "")).first()
        if training_run is None:
            raise CommandError(f"{checkpoint!r} has no training run record in this database (gate_model needs the run's data split).")
        decision, gate = gate_training_run(training_run, cfg)
        for reason in decision.reasons:
            self.stdout.write(f"  {reason}")
        if not deploy or not decision.passed:
            record_gate(training_run, gate)
            if not decision.passed:
                raise CommandError(f"{training_run.name} rejected by the gate; the live model is unchanged.", returncode=1)
            self.stdout.write(f"{training_run.name} passed its gate. Deploy it with --deploy.")
            return
        try:
            promotion = promote(training_run, gate, cfg, by=f"gate_model ({getpass.getuser()})", quantization=quantization)
        except (RegistryError, RegistrationError) as exc:
            raise CommandError(f"{training_run.name} passed its gate but was not deployed: {exc}") from exc
        if promotion.outcome != Outcome.DEPLOYED:
            raise CommandError(f"{training_run.name} passed its gate but was not deployed: {promotion.message}")
        self.stdout.write(f"{training_run.name} passed its gate: {promotion.message}.")
