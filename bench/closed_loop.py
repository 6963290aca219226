"""The loop on its own traffic (a benchmark, not a test): does the live model get better from the ratings of its
own answers, and does the gate keep a bad candidate out?

The loop starts where a new installation starts: with few ratings. The demo generator's first --seed-scenarios
questions (default 120 of the demo's 480), rated exhaustively by the SIMULATED rater, are all the feedback there is.
Round 0 trains the first model on them (online_learn, gated against the base) and makes it live. Each round then:
  1. new operator questions from the demo generator with another seed (none of them in the training data),
  2. the live model answers each through serving (rl/serving/picks.py; --backend ollama: Ollama's /api/chat, here the
     SIMULATED Ollama, which runs the live GGUF through llama.cpp with the answer schema as a grammar; --backend openai:
     the OpenAI API of the REAL llama.cpp server, kept in step with the models file the deploys write, as
     `manage.py serve_llama_cpp` keeps it),
  3. the SIMULATED rater rates each answer (the demo's rule: thumbs up when widget and fixtures are right, 5% noise,
     a correction on 30% of the thumbs down),
  4. online_learn retrains on everything (forced, the buffer being small) with the cpu preset as cron would run it
     (warm start from the live adapter, 1.5 epochs over the newest ratings first; --max-steps caps it), gates the
     candidate against the live model on the production gate sets (the whole held-out split and the natural set), and
     deploys a candidate that passed.
The last round only serves and rates (its retrain would not be measured; --retrain-after-last adds it), and decides
on an A/B arm that its ratings completed.
With --serve-base, round 0 first serves the base model (the demo's SmolLM2 GGUF, live as in an installation before any
tuned model) the same way; its up-rate is the loop's starting figure, and the first model is gated against that base.
--continue --first-round N goes on with a --workdir after round N-1.
Printed per round: the live version, its up-rate on that round's questions with a 95% Wilson interval (and how many
answers were right before the rater's noise), what the retrain trained on, and the gate decision. At the end a
candidate trained on FLIPPED ratings is gated against the live model on the natural set and must be rejected, every
deployment is checked to be of a version that passed its gate, and the up-rates are listed round by round.

With --probe N, the model live after each round (and at the start) answers the same N fresh questions (not stored,
not rated into the database): the rounds' own up-rates are each on other questions, this compares the models alone.
The round-to-round verdict is a one-sided exact McNemar test on those questions, "no change" when the same model
stayed live.

With --deploy-mode ab (the online learner's deploy_mode), a candidate that passed its gate first answers --ab-share
of the next rounds' questions beside the live model; each round's tick then promotes it when its rated picks are
better by a one-sided Fisher exact test, retires it when worse or after --ab-max-ratings without evidence, or waits
(no retrain while it waits). The round line gives each arm's up-rate and the decision.

Everything lives in --workdir (its own SQLite database and run folders); the project's database is not touched.

    .venv/bin/python bench/closed_loop.py --serve-base --rounds 3 --questions 160 --seed-scenarios 360 --max-steps 80 \
        --gate-eval-limit 0 --warm-start-learning-rate-scale 0.15 --probe 160
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=80, help="new questions served and rated per round")
    parser.add_argument("--seed-scenarios", type=int, default=120, help="demo questions (rated by the simulated rater) the loop starts from")
    parser.add_argument("--max-steps", type=int, default=0, help="cap on training steps per retrain (0: the cpu preset's 1.5 epochs)")
    parser.add_argument("--gate-sets", default="held_out,natural", help="the round gates' sets (the online learner's default)")
    parser.add_argument("--gate-eval-limit", type=int, default=0, help="held-out pairs/scenarios the round gates score (0: all)")
    parser.add_argument("--workdir", default=str(ROOT / "bench_output" / "closed_loop"))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--retrain-after-last", action="store_true", help="retrain (and gate) after the last round too")
    parser.add_argument("--skip-flipped", action="store_true", help="leave out the flipped-ratings candidate")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="keep --workdir's database and runs (round 0 is skipped when a model is live)")
    parser.add_argument("--first-round", type=int, default=1, help="number of the first serving round (with --continue: "
                        "go on after the last one; each round's questions come from a seed of its own)")
    parser.add_argument("--serve-base", action="store_true", help="round 0 serves and rates the base model's picks before the "
                        "first model is trained (--rounds then counts the rounds after it)")
    parser.add_argument("--deploy-run", default="", help="with --continue and nothing live: round 0 gates this trained run and "
                        "deploys it if it passes (as gate_model --deploy) instead of training a new one")
    parser.add_argument("--retrain-first", action="store_true", help="with --continue and a model live: retrain and gate before "
                        "serving the first round (the retrain the previous invocation's last round did not do)")
    parser.add_argument("--init-adapter-reference", choices=("base", "adapter"), default="",
                        help="the warm retrains' DPO reference (TrainingConfig.init_adapter_reference; default: the preset's)")
    parser.add_argument("--warm-start-learning-rate-scale", type=float, default=0.0,
                        help="the warm retrains' learning rate as a share of the preset's (the online learner's "
                        "warm_start_learning_rate_scale; default: its setting)")
    parser.add_argument("--backend", choices=("ollama", "openai"), default="ollama", help="serve through Ollama's API (the "
                        "SIMULATED Ollama) or the OpenAI API of llama.cpp's real server (RL_SERVING engine llama_cpp)")
    parser.add_argument("--probe", type=int, default=0, help="ask the live model at the start and after every round the same N "
                        "fresh questions (none in the database; ratings not stored) and compare the live models on them")
    parser.add_argument("--deploy-mode", choices=("replace", "ab"), default="replace", help="the online learner's deploy_mode")
    parser.add_argument("--ab-share", type=float, default=0.5, help="deploy_mode ab: the candidate arm's share of requests")
    parser.add_argument("--ab-min-ratings", type=int, default=50, help="deploy_mode ab: the candidate's ratings before any decision")
    parser.add_argument("--ab-max-ratings", type=int, default=200, help="deploy_mode ab: retire without evidence after this many")
    args = parser.parse_args()

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        (work / "db.sqlite3").unlink(missing_ok=True)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "backend.settings", "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "RL_CHECKPOINT_DIR": str(work / "runs"), "ENABLE_ONLINE_LEARNING": "true",
    })
    overrides = {"max_steps": args.max_steps} if args.max_steps > 0 else {}
    if args.init_adapter_reference:
        overrides["init_adapter_reference"] = args.init_adapter_reference
    if overrides:
        os.environ["RL_TRAINING_OVERRIDES"] = json.dumps(overrides)
    if args.backend == "openai":
        os.environ.update({"RL_SERVING": json.dumps({"engine": "llama_cpp"}), "RL_LLAMA_CPP_MODELS_FILE": str(work / "llama_cpp_models.json")})
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from feedback.demo import fresh_questions, simulated_verdict
    from feedback.models import Scenario
    from feedback.services import rating_submit
    from feedback.validation import clean_rating
    from rl.deploy.gating import gate_training_run
    from rl.deploy.promote import promote
    from rl.deploy.registry import live_version
    from rl.evaluation.ab_results import UpRate
    from rl.loop.online_learner import init_online_learner
    from rl.models import Deployment, ModelVersion, OnlineRun, TrainingRun
    from rl.serving.picks import ServingError, pick_widget

    call_command("migrate", verbosity=0)
    if not Scenario.objects.exists():
        call_command("seed_demo", scenarios=args.seed_scenarios, verbosity=0)
    rater, _ = get_user_model().objects.get_or_create(username="closed-loop-operator")
    rng = random.Random(args.seed)
    scale = {"warm_start_learning_rate_scale": args.warm_start_learning_rate_scale} if args.warm_start_learning_rate_scale else {}
    ab = {"deploy_mode": args.deploy_mode, "ab_share": args.ab_share, "ab_min_ratings": args.ab_min_ratings,
          "ab_max_ratings": args.ab_max_ratings} if args.deploy_mode == "ab" else {}
    learner = init_online_learner(min_samples=1, auto_deploy=True, gate_sets=args.gate_sets, gate_eval_limit=args.gate_eval_limit,
                                  heartbeat_seconds=60, stale_after_minutes=180, **scale, **ab)
    probe_questions = fresh_probe_questions(args.probe, args.seed * 1000 + 999) if args.probe else []
    probed: dict[str, dict] = {}
    summary = []
    base_version = None
    with serving_engine(args.backend, work) as engine:
        started = time.time()
        if args.resume and args.backend == "ollama":
            restore_registrations(engine.url)
        if args.resume and live_version() is None and args.deploy_run:
            deploy_run = TrainingRun.objects.get(name=args.deploy_run)
            decision, gate = gate_training_run(deploy_run, learner.config)
            promotion = promote(deploy_run, gate, learner.config, by="closed_loop bench (--deploy-run)")
            print(f"round 0: {promotion.message} ({time.time() - started:.0f} s): " + "; ".join(decision.reasons), flush=True)
        elif live_version() is None and args.serve_base:
            base_version = make_base_model_live(learner.config)
        elif live_version() is None:
            first = learner.tick(force=True)
            print(f"round 0: {first.action}: {first.message} ({time.time() - started:.0f} s)", flush=True)
        elif args.resume and args.retrain_first:
            result = learner.tick(force=True)
            run = OnlineRun.objects.filter(pk=result.run_id).first() if result.run_id else None
            print(f"retrain before round {args.first_round} ({training_summary(run.training_run if run else None)}): {result.action} "
                  f"({time.time() - started:.0f} s): {'; '.join((run.gate or {}).get('reasons', [])) if run else result.message}", flush=True)
            summary.append({"retrain_before_round": args.first_round, "outcome": result.action,
                            "reasons": (run.gate or {}).get("reasons", []) if run else [result.message]})
        last_round = args.first_round + args.rounds - 1
        for round_number in range(0 if base_version is not None else args.first_round, last_round + 1):
            live = live_version()
            if live is None:
                print(f"round {round_number}: no live model, stopping")
                break
            engine.wait_until_serving(live.ollama_name)
            known = {q.lower() for q in Scenario.objects.values_list("query", flat=True)}
            questions = fresh_questions(args.seed * 1000 + round_number, args.questions, known)
            ups = right = served = failed = 0
            arms: dict[str, list[int]] = {}
            started = time.time()
            for question in questions:
                record = question.record
                try:
                    answer = pick_widget(Scenario(query=record.query, site=record.site, role=record.role, time_range=record.time_range))
                except ServingError as exc:
                    failed += 1
                    print(f"  not served: {exc}")
                    continue
                verdict = simulated_verdict(question, answer.pick.widget, answer.pick.fixtures, rng)
                rating_submit(entry=answer.entry, rater=rater, rating_input=clean_rating(
                    verdict.value, ["corrected"] if verdict.corrected_widget else [], "", verdict.corrected_widget, list(verdict.corrected_fixtures)))
                served += 1
                ups += verdict.value == "up"
                arm = arms.setdefault(f"{answer.arm} {answer.model_version}", [0, 0])
                arm[0], arm[1] = arm[0] + (verdict.value == "up"), arm[1] + 1
                right += question.is_right(answer.pick.widget, answer.pick.fixtures)
            rate = UpRate(live.ollama_name, ups, served)
            serve_seconds = time.time() - started
            line = (f"round {round_number}: live {live.ollama_name}: up-rate on {served} new questions {rate}, right {right} "
                    f"({failed} not served, {serve_seconds:.0f} s serving)")
            if len(arms) > 1:
                line += " | arms: " + ", ".join(f"{name} {u}/{n}" for name, (u, n) in sorted(arms.items()))
            outcome = reasons = ab_words = ""
            if round_number < last_round or args.retrain_after_last:
                started = time.time()
                if base_version is not None:  # nothing live: the first model is gated against the base model itself
                    ModelVersion.objects.filter(pk=base_version.pk).update(status=ModelVersion.Status.RETIRED)
                result = learner.tick(force=True)
                if result.action.startswith("ab_"):  # the tick decided on the A/B arm first; it retrains only once that is over
                    ab_words = result.message
                    line += f" | {ab_words}"
                    if result.action != "ab_wait":
                        result = learner.tick(force=True)
                if base_version is not None and live_version() is None:  # the first model lost its gate: base serves on
                    promote(base_version, base_version.gate, learner.config, by="closed_loop bench --serve-base (the first tuned model lost its gate)")
                elif base_version is not None:
                    base_version = None
                if not result.action.startswith("ab_"):
                    run = OnlineRun.objects.filter(pk=result.run_id).first() if result.run_id else None
                    outcome, reasons = result.action, "; ".join((run.gate or {}).get("reasons", [])) if run else ""
                    line += (f" | retrain ({training_summary(run.training_run if run else None)}): {outcome} "
                             f"({time.time() - started:.0f} s): {reasons}")
            else:  # the last round retrains nothing, but an A/B arm's ratings are in: the decision a tick would make
                decided = learner.ab_decision()
                if decided is not None:
                    ab_words = decided.message
                    line += f" | {ab_words}"
            print(line, flush=True)
            entry = {"round": round_number, "live": live.ollama_name, "ups": ups, "right": right, "n": served, "low": rate.interval[0],
                     "high": rate.interval[1], "arms": arms, "ab": ab_words, "outcome": outcome, "reasons": reasons}
            if probe_questions:
                after = live_version()
                entry["probe_before"] = probe_version(engine, live, probe_questions, probed, rng_seed=args.seed)["version"]
                entry["probe_after"] = probe_version(engine, after, probe_questions, probed, rng_seed=args.seed)["version"] if after else ""
            summary.append(entry)

        if not args.skip_flipped:
            summary.append({"flipped": flipped_candidate(work, learner.config)})
        if probe_questions:
            for version in deployed_versions():
                probe_version(engine, version, probe_questions, probed, rng_seed=args.seed)
            (work / "probe.json").write_text(json.dumps(list(probed.values()), indent=1))
    bad = [d for d in Deployment.objects.select_related("version") if not (d.version.gate or {}).get("passed") and not (d.version.gate or {}).get("forced_by")]
    lost_ab = {d.version_id for d in Deployment.objects.filter(action=Deployment.Action.AB_RETIRE)}
    live_after_losing_ab = [d for d in Deployment.objects.filter(version_id__in=lost_ab, action__in=[Deployment.Action.ACTIVATE, Deployment.Action.AB_PROMOTE])]
    print(f"deployments: {Deployment.objects.count()} ({', '.join(f'{a} {n}' for a, n in deployment_counts())}), of versions that "
          f"lost their gate: {len(bad)}, of versions that lost their A/B: {len(live_after_losing_ab)}")
    print(f"live at the end: {live_version()}; versions: {[str(v) for v in ModelVersion.objects.all()]}")
    rounds = [r for r in summary if "round" in r]
    for r in rounds:
        print(f"  round {r['round']}: {r['live']}: up {r['ups']}/{r['n']} = {r['ups'] / max(r['n'], 1):.1%} "
              f"(95% {r['low']:.1%}-{r['high']:.1%}), right {r['right']}")
    print("from round to round (each round asks new questions, so rounds compare as independent samples; --probe "
          "compares the deployed versions on the same questions):")
    for before, after in itertools.pairwise(rounds):
        print(f"  round {before['round']} -> {after['round']}: {round_verdict(before, after)}")
    if probe_questions:
        print(f"the live model after each round on the same {len(probe_questions)} fresh probe questions (one-sided exact McNemar):")
        for r in rounds:
            if r.get("probe_after"):
                print(f"  round {r['round']}: {probe_verdict(probed[r['probe_before']], probed[r['probe_after']])}")
        # With --continue the earlier rounds' lines are in the earlier invocation's output; the versions that went live
        # since the loop began are in the database, so the whole sequence is compared here on the same questions.
        went_live = [probed[v.ollama_name] for v in deployed_versions() if v.ollama_name in probed]
        print(f"every version that went live, in order, on the same {len(probe_questions)} probe questions:")
        for before, after in itertools.pairwise(went_live):
            print(f"  {probe_verdict(before, after)}")
    summary_name = "summary.json" if args.first_round == 1 else f"summary-rounds-{args.first_round}-{last_round}.json"
    (work / summary_name).write_text(json.dumps(summary, indent=1, default=str))


class ServingEngineForBench:
    """The engine the rounds are served by: the SIMULATED Ollama, or llama.cpp's real server on the models file."""

    def __init__(self, url: str, llama_cpp_server: Any = None):
        self.url, self.llama_cpp_server = url, llama_cpp_server

    def wait_until_serving(self, name: str, seconds: float = 180.0) -> None:
        """Until the engine answers for `name` (llama.cpp's server restarts after each deploy; Ollama needs no wait)."""
        deadline = time.time() + seconds
        # A registration changes the models file first: wait for the restart it causes, not only for the name.
        while self.llama_cpp_server is not None and (self.llama_cpp_server.changed() or not self.llama_cpp_server.serves(name)):
            if time.time() > deadline:
                raise SystemExit(f"llama.cpp's server did not serve {name} within {seconds:g} s")
            time.sleep(0.5)


@contextlib.contextmanager
def serving_engine(backend: str, work: Path) -> Iterator[ServingEngineForBench]:
    from django.conf import settings

    if backend == "ollama":
        from rl.simulated.ollama import SimulatedOllama

        with SimulatedOllama() as ollama:
            settings.OLLAMA_HOST = ollama.url
            yield ServingEngineForBench(ollama.url)
        return
    import socket

    from rl.serving.llama_cpp_server import LlamaCppServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models_file = Path(settings.RL_LLAMA_CPP_MODELS_FILE)
    if models_file.exists():  # --continue: the file keeps the versions; serve on a free port this time
        models_file.write_text(json.dumps({**json.loads(models_file.read_text()), "port": port}))
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"
    with LlamaCppServer(models_file, log_path=work / "llama_cpp_server.log").watching(poll_seconds=0.5) as server:
        yield ServingEngineForBench(settings.OPENAI_BASE_URL, server)


def round_verdict(before: dict, after: dict) -> str:
    """Whether the up-rate rose between two rounds, as the statistics say: 'no change' when the same model stayed live
    (the rounds differ only by their questions), else a one-sided Fisher exact test on the two rounds' thumbs up."""
    from scipy.stats import fisher_exact

    if before["live"] == after["live"]:
        return f"no change: {after['live']} stayed live (the rounds differ only by their questions)"
    table = [[after["ups"], after["n"] - after["ups"]], [before["ups"], before["n"] - before["ups"]]]
    p_value = fisher_exact(table, alternative="greater").pvalue
    verdict = "rose" if p_value < 0.05 else "not shown to rise"
    return (f"{verdict}: {before['live']} {before['ups']}/{before['n']} -> {after['live']} {after['ups']}/{after['n']} "
            f"(one-sided Fisher exact p = {p_value:.3g})")


def make_base_model_live(config: Any) -> Any:
    """Register the base model's GGUF with the SIMULATED Ollama and make it the live version, as Command Center has it
    before any tuned model: round 0's picks come from it. Its record says it was put live by this bench, not by a gate."""
    from rl.core.base_model import file_sha256, resolve_base_model
    from rl.deploy.promote import promote
    from rl.models import ModelVersion

    gguf = resolve_base_model().gguf_file
    if gguf is None:
        raise SystemExit("--serve-base needs a GGUF base model (the demo's SmolLM2); this base model has no GGUF to serve.")
    version = ModelVersion.objects.create(
        name=config.model_name, tag="base", quantization=gguf.stem.rsplit(".", 1)[-1].lower(), export_dir=str(gguf.parent),
        gguf_path=str(gguf), sha256=file_sha256(gguf), size_bytes=gguf.stat().st_size, message="The base model, live for round 0.",
        gate={"passed": False, "forced_by": "closed_loop bench --serve-base", "reasons": ["the base model: live before any tuned model"]})
    promote(version, version.gate, config, by="closed_loop bench --serve-base")
    return version


def fresh_probe_questions(count: int, seed: int) -> list:
    """`count` fresh demo-generator questions, none in the database: the same for every model probed."""
    from feedback.demo import fresh_questions
    from feedback.models import Scenario

    known = {q.lower() for q in Scenario.objects.values_list("query", flat=True)}
    return fresh_questions(seed, count, known)


def deployed_versions() -> list:
    from rl.models import Deployment

    return list(dict.fromkeys(d.version for d in Deployment.objects.select_related("version").order_by("created_at", "pk")
                              if d.action in (Deployment.Action.ACTIVATE, Deployment.Action.AB_PROMOTE)))


def deployment_counts() -> list[tuple[str, int]]:
    from django.db.models import Count

    from rl.models import Deployment

    return [(row["action"], row["n"]) for row in Deployment.objects.values("action").annotate(n=Count("pk")).order_by("action")]


def probe_version(engine: ServingEngineForBench, version: Any, questions: list, probed: dict, rng_seed: int) -> dict:
    """`version` answers the probe questions through the engine with serving's prompt and schema; the SIMULATED rater
    judges them with a random stream of the same seed. Nothing is stored (the questions stay fresh); a version is asked
    once (`probed` keeps its result). Each round's own up-rate is on questions of its own; here only the model differs."""
    from feedback.demo import simulated_verdict
    from rl.core.prompts import ScenarioText
    from rl.evaluation.ab_results import UpRate
    from rl.models import ModelVersion
    from rl.serving.picks import ask_pick, current_catalog

    if version.ollama_name in probed:
        return probed[version.ollama_name]
    if version.status not in (ModelVersion.Status.REGISTERED, ModelVersion.Status.ACTIVE):
        register_again(version, engine.url)
    engine.wait_until_serving(version.ollama_name)
    catalog, rng, ups, right, started = current_catalog(), random.Random(rng_seed), 0, 0, time.time()
    outcomes = []  # per question, in order: the same questions for every version, so versions compare item by item
    for question in questions:
        record = question.record
        text = ScenarioText(record.query, record.site, record.role, record.time_range)
        pick = ask_pick(text, version.ollama_name, host=engine.url, catalog=catalog).pick
        up = simulated_verdict(question, pick.widget, pick.fixtures, rng).value == "up"
        outcomes.append(int(up))
        ups += up
        right += question.is_right(pick.widget, pick.fixtures)
    rate = UpRate(version.ollama_name, ups, len(questions))
    print(f"probe: {version.ollama_name}: up-rate on the same {len(questions)} fresh questions {rate}, right {right} "
          f"({time.time() - started:.0f} s)", flush=True)
    probed[version.ollama_name] = {"version": version.ollama_name, "ups": ups, "right": right, "n": len(questions),
                                   "low": rate.interval[0], "high": rate.interval[1], "up_outcomes": outcomes}
    return probed[version.ollama_name]


def probe_verdict(before: dict, after: dict) -> str:
    """Whether the live model's probe up-rate rose, fell or stayed, by a one-sided exact McNemar test each way on the
    same questions; 'no change' when the same model stayed live."""
    from rl.evaluation.paired import mcnemar_one_sided

    if before["version"] == after["version"]:
        return f"no change: {after['version']} stayed live ({after['ups']}/{after['n']} up)"
    newer, older = [bool(x) for x in after["up_outcomes"]], [bool(x) for x in before["up_outcomes"]]
    rose, fell = mcnemar_one_sided(newer, older), mcnemar_one_sided(older, newer)
    verdict = "rose" if rose.p_value < 0.05 else "fell" if fell.p_value < 0.05 else "neither rose nor fell significantly"
    return (f"{verdict}: {before['version']} {before['ups']}/{before['n']} -> {after['version']} {after['ups']}/{after['n']} "
            f"(up for the newer only on {rose.candidate_only}, for the older only on {rose.live_only}; p(rose) = {rose.p_value:.3g}, "
            f"p(fell) = {fell.p_value:.3g})")


def training_summary(training_run) -> str:
    """What a retrain trained on, from its TrainingRun row and metrics.jsonl."""
    if training_run is None:
        return "not trained"
    stats = (training_run.data_source or {}).get("stats", {})
    metrics_file = Path(training_run.run_dir) / "metrics.jsonl"
    logs = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
    steps = max((log.get("step", 0) for log in logs), default="?")
    return (f"{training_run.algo or '?'} on {stats.get('train_pairs', '?')} pairs of {stats.get('train_scenarios', '?')} scenarios, "
            f"{stats.get('correction_pairs', '?')} corrections, {steps} steps in {(training_run.metrics or {}).get('train_runtime', 0):.0f} s, "
            f"{'warm start' if (training_run.config or {}).get('init_adapter') else 'fresh adapter'}")


def restore_registrations(url: str) -> None:
    """The SIMULATED Ollama keeps no models between runs (a real one keeps them on disk): with --continue, register
    again every version the database says Ollama has, and point the live alias at the live one."""
    from rl.deploy.ollama_registry import point_alias
    from rl.deploy.registry import live_alias, live_version
    from rl.models import ModelVersion

    for version in ModelVersion.objects.filter(status__in=[ModelVersion.Status.REGISTERED, ModelVersion.Status.ACTIVE]):
        register_again(version, url)
    live = live_version()
    if live is not None:
        point_alias(url, live.ollama_name, live_alias())


def register_again(version: Any, url: str) -> None:
    """Register `version`'s GGUF with the SIMULATED Ollama at `url`, keeping the status the database gives it."""
    from rl.deploy.registration import register_version
    from rl.models import ModelVersion

    status, version.ollama_host = version.status, url
    register_version(version)
    ModelVersion.objects.filter(pk=version.pk).update(status=status, ollama_host=url)


def flipped_candidate(work: Path, config) -> dict:
    """Train on every rating flipped (up <-> down, corrections dropped) and gate it against the live model on the natural
    set, whose answers no rater can flip."""
    from feedback.files import write_json
    from feedback.selectors import feedback_data_export, feedback_ratings_export
    from rl.core.config import training_config
    from rl.deploy.gating import gate_training_run
    from rl.models import TrainingRun
    from rl.training.run import run_training

    ratings = feedback_ratings_export()
    flipped = ratings.model_copy(update={"ratings": [
        r.model_copy(update={"rating": "down" if r.rating == "up" else "up", "corrected_widget": None, "corrected_fixtures": [], "tags": []})
        for r in ratings.ratings]})
    write_json(work / "flipped-data.json", feedback_data_export())
    write_json(work / "flipped-ratings.json", flipped)
    started = time.time()
    result = run_training(training_config(config.preset, algo="dpo"), {"source": "file", "data_path": str(work / "flipped-data.json"),
                          "ratings_path": str(work / "flipped-ratings.json"), "rater": None}, preset=config.preset, run_name="flipped")
    if result.status != "succeeded":
        print(f"flipped candidate: training failed: {result.error}")
        return {"error": result.error}
    decision, gate = gate_training_run(TrainingRun.objects.get(name="flipped"), config.replace(gate_sets="natural"))
    print(f"flipped candidate ({time.time() - started:.0f} s): {'PASSED (bad)' if decision.passed else 'rejected'} against "
          f"{gate['live_model']}: " + "; ".join(decision.reasons), flush=True)
    return {"passed": decision.passed, "reasons": decision.reasons}


if __name__ == "__main__":
    main()
