import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.config import ConfigError, OnlineLearningConfig, config_field_help
from rl.management.commands.online_learn import parse_overrides


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
        parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                            help="Override an online-learning setting, e.g. --set gate_sets=natural. Fields: "
                                 + "; ".join(f"{k}: {v}" for k, v in config_field_help(OnlineLearningConfig).items()))

    def handle(self, *args, checkpoint: str, deploy: bool, quantization: str | None, set: list[str], **options) -> None:
        from rl.config import online_learning_config
        from rl.gating import gate_and_deploy
        from rl.models import TrainingRun
        from rl.ollama_registry import OllamaUnavailable, RegistrationError
        from rl.registry import RegistryError
        from rl.training_run import CheckpointError, resolve_checkpoint

        try:
            cfg = online_learning_config(**parse_overrides(set))
            adapter_dir, run_config = resolve_checkpoint(checkpoint)
        except (ConfigError, CheckpointError) as exc:
            raise CommandError(str(exc)) from exc
        training_run = TrainingRun.objects.filter(name=(run_config or {}).get("run", "")).first()
        if training_run is None:
            raise CommandError(f"{checkpoint!r} has no training run record in this database (gate_model needs the run's data split).")
        try:
            decision, deployment = gate_and_deploy(training_run, cfg, deploy=deploy, by=f"gate_model ({getpass.getuser()})", quantization=quantization)
        except (RegistryError, OllamaUnavailable, RegistrationError) as exc:
            raise CommandError(f"{training_run.name} passed its gate but was not deployed: {exc}") from exc
        for reason in decision.reasons:
            self.stdout.write(f"  {reason}")
        if not decision.passed:
            raise CommandError(f"{training_run.name} rejected by the gate; the live model is unchanged.", returncode=1)
        if deployment is not None:
            self.stdout.write(f"{training_run.name} passed its gate: {deployment.version.ollama_name} is live as {deployment.alias}.")
        else:
            self.stdout.write(f"{training_run.name} passed its gate." + ("" if deploy else " Deploy it with --deploy."))
