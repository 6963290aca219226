"""Serving latency per pick on both serving APIs, the same GGUF behind each (a benchmark, not a test).

The demo's base model (SmolLM2 GGUF) is registered with the SIMULATED Ollama (Ollama's /api/chat; it runs the GGUF
through llama-cpp-python in its own process, with the answer schema as a grammar) and with llama.cpp's REAL
OpenAI-compatible server (llama-cpp-python's `llama_cpp.server`, as `manage.py serve_llama_cpp` runs it), then both
answer the same fresh demo questions through `ask_pick`, alternating question by question so that neither gets a
quieter machine. Printed: median, p95 and mean seconds per pick, and how many answers were usable picks.

    .venv/bin/python bench/serving_latency.py --questions 40

Everything lives in --workdir (its own SQLite database); the project's database is not touched.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=40, help="fresh demo questions each backend answers")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads on both sides (0: llama-cpp-python's default)")
    parser.add_argument("--logprobs", action=argparse.BooleanOptionalAction, default=True,
                        help="ask the OpenAI-compatible server for log-probs (the pick's confidence), as serving does by default")
    parser.add_argument("--workdir", default=str(ROOT / "bench_output" / "serving_latency"))
    args = parser.parse_args()

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "db.sqlite3").unlink(missing_ok=True)
    (work / "models.json").unlink(missing_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"DJANGO_SETTINGS_MODULE": "backend.settings", "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
                       "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "RL_LLAMA_CPP_MODELS_FILE": str(work / "models.json")})
    import django

    django.setup()
    from django.core.management import call_command
    from tqdm import tqdm

    from feedback.demo import fresh_questions
    from feedback.models import Scenario
    from rl.core.base_model import default_base_model
    from rl.core.config import serving_config
    from rl.core.prompts import SYSTEM_PROMPT, ScenarioText
    from rl.deploy.llama_cpp_registry import LlamaCppServerEngine, ModelsFile
    from rl.deploy.ollama_registry import register_gguf
    from rl.export.modelfile import CHATML, ollama_parameters
    from rl.serving.errors import ServingError
    from rl.serving.llama_cpp_server import LlamaCppServer
    from rl.serving.picks import ask_pick, current_catalog
    from rl.simulated.ollama import SimulatedOllama

    call_command("migrate", verbosity=0)
    call_command("seed_demo", scenarios=60, verbosity=0)
    known = {q.lower() for q in Scenario.objects.values_list("query", flat=True)}
    questions = fresh_questions(4242, args.questions, known)
    catalog, gguf, name = current_catalog(), str(default_base_model()), "cc-widget-selector:base"
    threads = args.threads or None
    engine = LlamaCppServerEngine(os.environ["OPENAI_BASE_URL"], work / "models.json")
    engine.register(type("Version", (), {"ollama_name": name, "gguf_path": gguf})(), "chatml", "", {})
    if threads:
        models = ModelsFile(work / "models.json")
        with models.editing(engine.url) as content:
            for model in content["models"]:
                model.update(n_threads=threads, n_threads_batch=threads)
    seconds: dict[str, list[float]] = {"ollama": [], "openai": []}
    usable = {"ollama": 0, "openai": 0}
    with SimulatedOllama(n_threads=threads) as ollama, LlamaCppServer(work / "models.json", log_path=work / "server.log") as server:
        register_gguf(host=ollama.url, model=name, gguf_path=gguf, template=CHATML.template, system=SYSTEM_PROMPT,
                      parameters=ollama_parameters(CHATML))
        backends = {"ollama": (serving_config(engine="ollama"), ollama.url), "openai": (serving_config(engine="llama_cpp", logprobs=args.logprobs), server.url)}
        for backend, (config, url) in backends.items():  # one warm-up pick each: the model's first load is not a pick's latency
            try:
                ask_pick(ScenarioText("warm up", questions[0].record.site, "", ""), name, config=config, host=url, catalog=catalog)
            except ServingError:
                pass
        for question in tqdm(questions, desc="picks", disable=not sys.stderr.isatty()):
            record = question.record
            text = ScenarioText(record.query, record.site, record.role, record.time_range)
            for backend, (config, url) in backends.items():
                started = time.perf_counter()
                try:
                    ask_pick(text, name, config=config, host=url, catalog=catalog)
                    usable[backend] += 1
                except ServingError as exc:
                    print(f"{backend}: {exc}")
                seconds[backend].append(time.perf_counter() - started)
    print(f"\nserving latency per pick, {args.questions} fresh questions, the same GGUF ({Path(gguf).name}), "
          f"threads {threads or 'default'}, {os.cpu_count()} CPUs, log-probs {'on' if args.logprobs else 'off'}")
    print(f"{'backend':<40} {'median s':>9} {'p95 s':>7} {'mean s':>7} {'usable':>7}")
    labels = {"ollama": "ollama (SIMULATED Ollama, llama-cpp-python)", "openai": "openai (llama.cpp's real server)"}
    for backend, values in seconds.items():
        print(f"{labels[backend]:<40} {statistics.median(values):>9.3f} {percentile(values, 0.95):>7.3f} "
              f"{statistics.mean(values):>7.3f} {usable[backend]:>4}/{len(values)}")
    (work / "latency.json").write_text(json.dumps({"seconds": seconds, "usable": usable, "threads": threads}, indent=1))


if __name__ == "__main__":
    main()
