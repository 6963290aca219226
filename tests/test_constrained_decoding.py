"""Constrained decoding: a random tiny model, held to the answer schema, only ever names catalog widgets and shortlist
fixtures, in both backends (xgrammar for PyTorch, llama.cpp's JSON-schema grammar for the GGUF)."""
import dataclasses

import pytest

from rl.core.prompts import Pick, ScenarioText, answer_schema, build_messages, decision_length, decision_schema, parse_pick
from rl.evaluation.backends import LlamaCppBackend, TorchBackend
from rl.evaluation.evalset import EvalSet, GenerationCase, tokenize_prompt
from rl.evaluation.metrics import evaluate_backend, generation_metrics
from rl.export.gguf_convert import convert_hf_to_gguf
from tests.rl_cases import CATALOG

QUESTIONS = ["How has chiller 1 power trended this week?", "Which work orders are open?", "Outdoor air temperature now?",
             "chiller 2 kW against its limit", "Show me everything", "Compare chiller 1 and chiller 2"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def _cases(tokenizer):
    scenarios = [ScenarioText(q, "HQ") for q in QUESTIONS]
    return scenarios, [
        GenerationCase(f"s{i}", tuple(tokenize_prompt(tokenizer, build_messages(s, CATALOG))), (Pick("kpi_card", ("chiller_1_kw",)),),
                       answer_schema(s, CATALOG))
        for i, s in enumerate(scenarios)
    ]


def _check_constrained(answers, scenarios):
    for answer, scenario in zip(answers, scenarios, strict=True):
        pick = parse_pick(answer, CATALOG)  # raises on an unknown widget or fixture, or a broken answer
        assert pick.widget in CATALOG.widget_slugs
        assert set(pick.fixtures) <= set(CATALOG.shortlist_for(scenario))


def test_free_answers_of_a_random_model_are_garbage(tiny):
    model, tokenizer = tiny
    scenarios, cases = _cases(tokenizer)
    answers = TorchBackend("tiny", model, tokenizer).generate([c.prompt_ids for c in cases], 40)
    assert generation_metrics(answers, cases, CATALOG)["known_widget_rate"] == 0.0


def test_pytorch_constrained_answers_only_name_catalog_widgets_and_shortlist_fixtures(tiny):
    model, tokenizer = tiny
    scenarios, cases = _cases(tokenizer)
    answers = TorchBackend("tiny", model, tokenizer, generation_batch_size=4).generate(
        [c.prompt_ids for c in cases], 200, [c.schema for c in cases])
    _check_constrained(answers, scenarios)


def test_under_the_decision_schema_a_model_makes_the_decision_it_makes_under_the_whole_schema_and_the_pick_check_reads_it(tiny, monkeypatch):
    from rl.training.callbacks import BestPickCallback

    model, tokenizer = tiny
    scenarios, cases = _cases(tokenizer)
    backend = TorchBackend("tiny", model, tokenizer, generation_batch_size=4)
    whole = backend.generate([c.prompt_ids for c in cases], 200, [c.schema for c in cases])
    decisions = backend.generate([c.prompt_ids for c in cases], 200, [decision_schema(c.schema) for c in cases])
    assert decisions == [answer[: decision_length(answer)] + ', "title": ""}' for answer in whole]
    assert sum(map(len, decisions)) < sum(map(len, whole))
    _check_constrained(decisions, scenarios)
    # From cases that hold the decision schema (as `build_eval_set` makes them), the training's pick check answers
    # with the decisions alone and scores them as the whole answers.
    decision_cases = [dataclasses.replace(c, schema=decision_schema(c.schema)) for c in cases]
    answered = []
    generate = TorchBackend.generate
    monkeypatch.setattr(TorchBackend, "generate", lambda self, *args: answered.extend(generate(self, *args)) or answered)
    checked = BestPickCallback(EvalSet([], decision_cases, CATALOG), tokenizer).score(model)
    assert answered == decisions
    scored = generation_metrics(whole, cases, CATALOG)
    assert {k: checked[k] for k in ("valid_json_rate", "widget_outcomes", "fixture_outcomes")} == {
        k: scored[k] for k in ("valid_json_rate", "widget_outcomes", "fixture_outcomes")}
    # So does evaluation (and the gate's scoring, through the same function).
    del answered[:]
    evaluated, _ = evaluate_backend(backend, EvalSet([], decision_cases, CATALOG), max_new_tokens=200, decodings=("constrained",))
    assert answered == decisions
    # every question's answer is kept, by scenario (6 questions: more than the five an evaluation file kept until 2026-12-05)
    assert evaluated["constrained_answers"] == [{"scenario_id": c.scenario_id, "answer": a} for c, a in zip(decision_cases, decisions)]
    assert {k: evaluated[f"constrained_{k}"] for k in scored if k != "n_scenarios"} == {k: v for k, v in scored.items() if k != "n_scenarios"}


def test_llama_cpp_constrained_answers_only_name_catalog_widgets_and_shortlist_fixtures(tiny, tiny_model_dir, tmp_path):
    _model, tokenizer = tiny
    scenarios, cases = _cases(tokenizer)
    backend = LlamaCppBackend("gguf", str(convert_hf_to_gguf(tiny_model_dir, tmp_path / "tiny.gguf")), tokenizer)
    answers = backend.generate([c.prompt_ids for c in cases], 200, [c.schema for c in cases])
    backend.llm.close()
    _check_constrained(answers, scenarios)


def test_pytorch_evaluation_precision_follows_the_setting_and_the_cpu(tiny, tiny_model_dir, settings, monkeypatch):
    import torch

    from rl.evaluation.backends import evaluation_model, evaluation_precision
    from rl.evaluation.score_cache import data_key

    _model, tokenizer = tiny
    _scenarios, cases = _cases(tokenizer)
    evalset = type("Set", (), {"pairs": [], "cases": cases})()
    monkeypatch.setattr("rl.core.cpu_precision.cpu_bf16_is_faster", lambda: True)
    settings.RL_EVALUATION_BF16 = False
    assert evaluation_precision() == "fp32" and evaluation_model(str(tiny_model_dir)).dtype == torch.float32
    fp32_key = data_key(evalset, 40)
    settings.RL_EVALUATION_BF16 = True
    on_cpu = not torch.cuda.is_available()
    assert evaluation_precision() == ("bf16 weights" if on_cpu else "fp32")
    assert evaluation_model(str(tiny_model_dir)).dtype == (torch.bfloat16 if on_cpu else torch.float32)
    assert (data_key(evalset, 40) != fp32_key) == on_cpu  # a gate never reuses a score made at another precision
    monkeypatch.setattr("rl.core.cpu_precision.cpu_bf16_is_faster", lambda: False)
    assert evaluation_precision() == "fp32"


def test_evaluation_merges_the_adapter_into_the_weights_and_scores_as_the_adapter_does(tiny, tiny_model_dir, settings, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.evaluation.backends import evaluation_model
    from rl.evaluation.evalset import TokenizedPair

    settings.RL_EVALUATION_BF16 = False
    _model, tokenizer = tiny
    torch.manual_seed(0)
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                             LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")
    _scenarios, cases = _cases(tokenizer)
    answers = [tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in ('{"widget": "kpi_card"}', '{"widget": "table"}')]
    pairs = [TokenizedPair(c.prompt_ids, answers[0], answers[1]) for c in cases]
    merged = evaluation_model(str(tiny_model_dir), tmp_path / "adapter")
    assert not any("lora" in name for name, _ in merged.named_parameters())  # merged: no LoRA layers left to run
    expected = TorchBackend("peft", adapted, tokenizer).answer_logps(pairs)
    base = TorchBackend("base", evaluation_model(str(tiny_model_dir)), tokenizer).answer_logps(pairs)
    got = TorchBackend("merged", merged, tokenizer).answer_logps(pairs)
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4)
    assert not torch.allclose(torch.tensor(base), torch.tensor(expected), atol=1e-3)  # the adapter changes the scores


def test_constrained_answers_under_bf16_autocast_stay_valid(tiny):
    model, tokenizer = tiny
    scenarios, cases = _cases(tokenizer)
    backend = TorchBackend("tiny", model, tokenizer, bf16_autocast=True)
    _check_constrained(backend.generate([c.prompt_ids for c in cases], 60, [c.schema for c in cases]), scenarios)


def _prompt_reading_model(tiny_model_dir):
    """Larger random weights than the tiny fixture's, whose greedy answer is the same for every prompt, so an answer
    depends on its prompt and its positions; as evaluation and the pick checks run it: base + non-zero LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir, initializer_range=0.2))
    return get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


@pytest.mark.parametrize("constrained", [False, True])
def test_a_batch_sharing_its_prompt_prefix_answers_as_each_prompt_alone(tiny, tiny_model_dir, constrained):
    from rl.core.shared_prefix import shared_prefix_length

    _model, tokenizer = tiny
    model = _prompt_reading_model(tiny_model_dir)
    _scenarios, cases = _cases(tokenizer)
    prompts = [c.prompt_ids for c in cases]
    schemas = [c.schema for c in cases] if constrained else None
    assert shared_prefix_length(prompts[:4]) > 20 and len({len(p) for p in prompts[:4]}) > 1  # shared prefix, then padding
    batched = TorchBackend("tiny", model, tokenizer, generation_batch_size=4, bf16_autocast=False).generate(prompts, 60, schemas)
    assert len(set(batched)) == len(prompts)  # the answers read their prompts
    alone = TorchBackend("tiny", model, tokenizer, generation_batch_size=1, bf16_autocast=False)
    assert batched == [alone.generate([p], 60, None if schemas is None else [s])[0] for p, s in zip(prompts, schemas or [None] * len(prompts))]


@pytest.mark.parametrize("max_bytes, reused", [(None, True), (0, False)])
def test_answers_after_scoring_reuse_the_scored_prompts_and_equal_those_computed_afresh(tiny, tiny_model_dir, max_bytes, reused):
    from rl.evaluation.evalset import TokenizedPair

    _model, tokenizer = tiny
    model = _prompt_reading_model(tiny_model_dir)
    _scenarios, cases = _cases(tokenizer)
    prompts, schemas = [c.prompt_ids for c in cases], [c.schema for c in cases]
    answers = [tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in ('{"widget": "kpi_card"}', '{"widget": "table"}')]
    # Scoring batches of 3 pairs: the first prompt alone in its batch (no common prefix), then batches sharing a
    # prefix; the last prompt has no pairs (a question nobody rated two ways), so generation must compute it.
    scored = prompts[:-1]
    pairs = [TokenizedPair(scored[0], *answers)] + [TokenizedPair(p, a, b) for p in scored[1:] for a, b in (answers, answers[::-1])]
    fresh = TorchBackend("fresh", model, tokenizer, generation_batch_size=4).generate(prompts, 30, schemas)
    backend = TorchBackend("scored first", model, tokenizer, batch_size=3, generation_batch_size=4)
    if max_bytes is not None:
        backend.prompt_key_values.max_bytes = max_bytes
    backend.answer_logps(pairs)
    assert backend.prompt_key_values.covers(scored) is reused and not backend.prompt_key_values.covers(prompts[-1:])

    forward_lengths = []
    embeddings = model.get_input_embeddings()
    hook = embeddings.register_forward_hook(lambda _module, args, _out: forward_lengths.append(args[0].size(1)))
    try:
        got = backend.generate(prompts, 30, schemas)
    finally:
        hook.remove()
    assert got == fresh
    # Forwards of more than one token a row: kept, only the unscored prompt's (its batch of one, no common prefix);
    # else each of the two batches (4 prompts, then 2) its rows' own parts, and neither its common prefix (the system
    # prompt, the widgets, "Question: "): the last scoring batch (prompts 3 and 4) ran a prefix that holds both.
    from rl.core.shared_prefix import shared_prefix_length

    assert shared_prefix_length(prompts[:4]) == shared_prefix_length(prompts[4:]) == shared_prefix_length(prompts[3:5]) > 20
    assert sum(n > 1 for n in forward_lengths) == (1 if reused else 2)


def test_a_scoring_batch_runs_only_the_prefix_tokens_it_does_not_share_with_the_last_batch_s_and_scores_as_afresh(tiny, tiny_model_dir,
                                                                                                                  monkeypatch):
    import torch

    from rl.core.shared_prefix import prefix_cache
    from rl.evaluation.evalset import TokenizedPair

    _model, tokenizer = tiny
    model = _prompt_reading_model(tiny_model_dir)
    _scenarios, cases = _cases(tokenizer)
    answers = [tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in ('{"widget": "kpi_card"}', '{"widget": "table"}')]
    pairs = [TokenizedPair(c.prompt_ids, a, b) for c in cases for a, b in (answers, answers[::-1])]
    prefix_tokens: list[int] = []  # tokens of each one-row forward through the first layer: the prefix runs
    model.get_base_model().model.layers[0].register_forward_hook(
        lambda _module, args, _out: prefix_tokens.append(args[0].size(1)) if args[0].size(0) == 1 else None)

    afresh = TorchBackend("afresh", model, tokenizer, batch_size=4)
    monkeypatch.setattr(afresh, "_prefix_cache", lambda ids, rows: prefix_cache(afresh._causal_lm(), ids, rows))
    expected = afresh.answer_logps(pairs)
    fresh_tokens = sum(prefix_tokens)
    prefix_tokens.clear()
    got = TorchBackend("reused", model, tokenizer, batch_size=4).answer_logps(pairs)
    assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-5)
    assert len(pairs) // 4 >= 3 and 0 < sum(prefix_tokens) < fresh_tokens / 2  # the first prefix whole, then what is new
