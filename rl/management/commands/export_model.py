"""`manage.py export_model`: a trained adapter to a verified GGUF with its Modelfile, registered with the serving engine on request."""
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.base_model import BaseModelError
from rl.core.runs import CheckpointError
from rl.data.snapshot import DatasetError
from rl.export.gguf_convert import ConversionError
from rl.export.importance import DEFAULT_CALIBRATION_PROMPTS
from rl.export.modelfile import TemplateError
from rl.export.quantize import QUANTIZATIONS, QuantizationError


class Command(BaseCommand):
    help = (
        "Export a trained adapter for Ollama: merge it into the base model, convert to GGUF (f16), quantize with "
        "llama.cpp, write a Modelfile whose TEMPLATE matches the tokenizer's chat template, verify (llama.cpp vs "
        "PyTorch next-token agreement, template parity, a parseable pick), then register with the serving engine "
        "(--register; RL_SERVING's engine: ollama, llama_cpp or vllm). --quantization lora records the adapter itself "
        "for vLLM instead (no merge, no GGUF). "
        "Artifacts go to <run>/exports/<quantization>/; a ModelVersion row records the result."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--checkpoint", required=True, help="A run's adapter folder (final/), its run folder, or its run name.")
        parser.add_argument("--model-name", help="Ollama name[:tag] (default: cc-widget-selector:<run>).")
        parser.add_argument("--quantization", default="q4_k_m", help=f"One of {', '.join(QUANTIZATIONS)} (default: q4_k_m), or "
                            "'lora': no merge and no GGUF, the adapter itself, for engines that load LoRA adapters (vLLM).")
        parser.add_argument("--register", action="store_true", help="Register with the serving engine (RL_SERVING's engine: Ollama by default) after a verified export.")
        parser.add_argument("--register-only", action="store_true", help="Register an earlier verified export of this checkpoint again.")
        parser.add_argument("--engine-url", "--ollama-host", dest="ollama_host", help="The serving engine's address (default: OLLAMA_HOST for Ollama, OPENAI_BASE_URL for the OpenAI-compatible engines; RL_SERVING's engine says which).")
        parser.add_argument("--template-file", help="An Ollama TEMPLATE to use when the chat template's family is unknown.")
        parser.add_argument("--llama-cpp-dir", help="Convert with this llama.cpp checkout's convert_hf_to_gguf.py (other architectures).")
        parser.add_argument("--skip-pick-check", action="store_true", help="Do not require the quantized model to answer with a parseable pick.")
        parser.add_argument("--imatrix", dest="importance_prompts", type=int, nargs="?", const=DEFAULT_CALIBRATION_PROMPTS, default=0,
                            metavar="PROMPTS",
                            help="Quantize with an importance matrix, as llama-quantize --imatrix does: the merged model's "
                            "mean squared activations over PROMPTS of the run's own prompts (default "
                            f"{DEFAULT_CALIBRATION_PROMPTS}) weigh llama.cpp's rounding; the tensor types stay those of "
                            "--quantization. Off by default: it did not gain on the demo's model (docs/training-recipe.md, round eighteen).")

    def handle(self, *args, **options) -> None:
        from rl.deploy.registration import export_and_register, register_version
        from rl.export.exporter import ExportError
        from rl.models import ModelVersion

        if options["importance_prompts"] < 0:
            raise CommandError(f"--imatrix takes a number of prompts, at least 1; not {options['importance_prompts']}.")
        try:
            if options["register_only"]:
                version = self._version_for(options, ModelVersion)
                version = register_version(version)
                self.stdout.write(f"{version.ollama_name}: {version.status}. {version.message}")
                if version.status != ModelVersion.Status.REGISTERED:
                    raise CommandError(version.message)
                return
            result = export_and_register(
                options["checkpoint"], register=options["register"], model_name=options["model_name"],
                quantization=options["quantization"], template_file=options["template_file"], llama_cpp_dir=options["llama_cpp_dir"],
                ollama_host=options["ollama_host"], check_pick=not options["skip_pick_check"],
                importance_prompts=options["importance_prompts"],
            )
        except (ExportError, CheckpointError, QuantizationError, ConversionError, TemplateError, BaseModelError, DatasetError) as exc:
            raise CommandError(str(exc)) from exc
        for key in ("model", "status", "gguf_path", "modelfile_path", "quantization", "sha256", "size_bytes", "message"):
            self.stdout.write(f"{key}: {getattr(result, key)}")
        if result.quantize.get("importance_tensors"):
            self.stdout.write(f"importance matrix: {result.quantize['importance_tensors']} tensors")
        if result.quantize.get("note"):
            self.stdout.write(f"quantization note: {result.quantize['note']}")
        verification = result.verification
        if verification:
            self.stdout.write(
                f"verification: argmax agreement {verification.get('argmax_agreement')}, template parity "
                f"{verification.get('template_parity')}, pick parsed {verification.get('pick_parsed')}"
            )
        if result.status == "rejected":
            raise CommandError(result.message)

    def _version_for(self, options: dict, model_version: type):
        from rl.core.runs import EXPORTS_DIR, resolve_checkpoint
        from rl.export.exporter import ADAPTER_ONLY

        adapter_dir, run_config = resolve_checkpoint(options["checkpoint"])
        quantization = options["quantization"].lower()
        if quantization == ADAPTER_ONLY:
            versions = model_version.objects.filter(adapter_path=str(adapter_dir), quantization=quantization)
        else:
            versions = model_version.objects.filter(export_dir__startswith=str(adapter_dir.parent / EXPORTS_DIR), quantization=quantization)
        version = versions.order_by("-created_at").first()
        if version is None:
            raise CommandError(f"No export of {options['checkpoint']} in {options['quantization']} to register: run export_model first.")
        if options["ollama_host"]:
            version.ollama_host = options["ollama_host"]
        return version
