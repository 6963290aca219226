"""Held-out evaluation of a model on the widget-pick task, by two backends with the same code and metrics.

- Preference accuracy: the share of held-out pairs where the model gives the human-chosen answer the higher
  log-probability (summed over its tokens; also per token, "normalized"). Ties count as wrong and are reported.
  With a reference model's log-probs (the base), also the implicit DPO reward
  `beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]`: its accuracy (> 0) and mean margin.
- Pick accuracy by generation: greedy answers to each held-out scenario's prompt (rl/prompts.py), parsed by
  rl/prompts.py, scored against the human's up-rated picks. Twice: free, and constrained to the prompt's answer schema
  (`rl.prompts.answer_schema`: a catalog widget, fixtures from the prompt's shortlist) through a grammar: xgrammar for
  PyTorch, llama.cpp's JSON-schema grammar for a GGUF. Base and tuned are always decoded the same way.
- Readable pick metrics: per-widget precision and recall, the share of answers per predicted widget, and a collapse
  warning when one widget takes more than `COLLAPSE_FACTOR` times its true share.

Backends: `TorchBackend` (a transformers model, with or without its LoRA adapter) and `LlamaCppBackend` (a GGUF file
through llama.cpp, i.e. the artifact that will be served). Both score the SAME token ids, tokenized once here with
the Hugging Face tokenizer's chat template.
"""
from __future__ import annotations

import contextlib
import json
import logging
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from rl.prompts import Catalog, Pick, PickParseError, parse_pick

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 96
DECODINGS = ("free", "constrained")
COLLAPSE_FACTOR = 2.0


class EvaluationError(ValueError):
    pass


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


@dataclass(frozen=True)
class GenerationCase:
    scenario_id: str
    prompt_ids: tuple[int, ...]
    expected: tuple[Pick, ...]  # every up-rated pick of the scenario
    schema: dict[str, Any] | None = None  # the JSON schema of a valid answer to this prompt


@dataclass
class EvalSet:
    pairs: list[TokenizedPair]
    cases: list[GenerationCase]
    catalog: Catalog
    description: dict[str, Any] = field(default_factory=dict)


def _answer_ids(tokenizer: Any, prompt: list[dict], answer: list[dict], prompt_ids: list[int]) -> tuple[int, ...]:
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
    if full[: len(prompt_ids)] != prompt_ids:
        raise EvaluationError("The chat template does not extend the prompt with the answer; cannot score answers.")
    return tuple(full[len(prompt_ids):])


def tokenize_prompt(tokenizer: Any, prompt: list[dict]) -> list[int]:
    return list(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])


def build_eval_set(pair_rows: list[dict], snapshot: Any, scenario_ids: set[str], tokenizer: Any, limit: int | None = None) -> EvalSet:
    """Tokenize held-out pairs and the generation cases of `scenario_ids` (scenarios with an up-rated pick)."""
    from rl.data_formatter import entry_verdicts
    from rl.prompts import answer_schema, build_messages

    pairs = []
    for row in pair_rows[: limit or None]:
        prompt_ids = tokenize_prompt(tokenizer, row["prompt"])
        pairs.append(TokenizedPair(
            tuple(prompt_ids), _answer_ids(tokenizer, row["prompt"], row["chosen"], prompt_ids),
            _answer_ids(tokenizer, row["prompt"], row["rejected"], prompt_ids),
        ))
    verdicts = entry_verdicts(snapshot.entries)
    ups: dict[str, list[Pick]] = defaultdict(list)
    for entry in snapshot.entries:
        if entry.scenario_id in scenario_ids and verdicts.get(entry.entry_id) == "up":
            ups[entry.scenario_id].append(entry.pick)
    cases = [
        GenerationCase(sid, tuple(tokenize_prompt(tokenizer, build_messages(snapshot.scenarios[sid], snapshot.catalog))), tuple(picks),
                       answer_schema(snapshot.scenarios[sid], snapshot.catalog))
        for sid, picks in sorted(ups.items())
    ][: limit or None]
    if not pairs and not cases:
        raise EvaluationError("The evaluation set is empty: no held-out pairs and no held-out scenario with an up-rated pick.")
    return EvalSet(pairs, cases, snapshot.catalog)


class Backend(Protocol):
    name: str

    def answer_logps(self, pairs: list[TokenizedPair]) -> list[tuple[float, float, int, int]]:
        """(chosen log-prob, rejected log-prob, chosen tokens, rejected tokens) per pair."""

    def generate(self, prompts: list[tuple[int, ...]], max_new_tokens: int, schemas: list[dict] | None = None) -> list[str]:
        """Greedy answers, decoded without special tokens; with `schemas`, each constrained to its JSON schema."""


def _stop_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


class SchemaGrammars:
    """Answer schemas compiled once each into xgrammar grammars for a Hugging Face tokenizer.

    The grammar writes JSON exactly as `rl.prompts.render_pick` does (", " and ": " separators, no other whitespace),
    so a model decodes in the format it was trained on."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        import xgrammar as xgr

        self._xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=_stop_ids(tokenizer))
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._compiled: dict[str, Any] = {}

    def compiled(self, schema: dict) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._compiled:
            self._compiled[key] = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(", ", ": "))
        return self._compiled[key]

    def logits_processor(self, schemas: list[dict]) -> Any:
        """A fresh processor for one `generate()` call, one grammar per row of the batch."""
        import xgrammar.contrib.hf

        return xgrammar.contrib.hf.LogitsProcessor([self.compiled(schema) for schema in schemas])


def evaluation_precision() -> str:
    """How PyTorch models are evaluated here: "bf16" (autocast over fp32 weights) on a CPU with native bfloat16 unless
    settings.RL_EVALUATION_BF16 is off, else "fp32"."""
    from django.conf import settings

    from rl import base_model

    bf16 = getattr(settings, "RL_EVALUATION_BF16", True) and not base_model.has_cuda() and base_model.cpu_has_bf16()
    return "bf16" if bf16 else "fp32"


class TorchBackend:
    """A transformers model; with `adapter_enabled=False` a PEFT model is scored as its base. It runs under bfloat16
    autocast when `bf16_autocast` is true, or when it is None and `evaluation_precision()` says so."""

    def __init__(self, name: str, model: Any, tokenizer: Any, *, adapter_enabled: bool = True, batch_size: int = 8,
                 bf16_autocast: bool | None = None):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.adapter_enabled, self.batch_size = adapter_enabled, batch_size
        self.bf16_autocast = evaluation_precision() == "bf16" if bf16_autocast is None else bf16_autocast

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        import torch

        self.model.eval()
        autocast = torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast)
        with torch.no_grad(), autocast:
            if not self.adapter_enabled and hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    yield
            else:
                yield

    def _causal_lm(self) -> Any:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def answer_logps(self, pairs: list[TokenizedPair]) -> list[tuple[float, float, int, int]]:
        from rl.prefix_sharing import PrefixSharingCollator, answer_logps

        eager = getattr(self._causal_lm().config, "_attn_implementation", "sdpa") == "eager"
        collate = PrefixSharingCollator(self.tokenizer.pad_token_id, eager_attention=eager)
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].prompt_ids)
        results: dict[int, tuple[float, float, int, int]] = {}
        with self._mode():
            for start in tqdm(range(0, len(order), self.batch_size), desc=f"{self.name}: scoring pairs", leave=False):
                chunk = order[start : start + self.batch_size]
                batch = collate([{"prompt_ids": list(pairs[i].prompt_ids), "chosen_ids": list(pairs[i].chosen_ids),
                                  "rejected_ids": list(pairs[i].rejected_ids)} for i in chunk])
                batch = {k: v.to(self.model.device) for k, v in batch.items()}
                scored = answer_logps(self._causal_lm(), batch)
                for j, i in enumerate(chunk):
                    results[i] = (float(scored.chosen[j]), float(scored.rejected[j]), len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))
        return [results[i] for i in range(len(pairs))]

    def generate(self, prompts: list[tuple[int, ...]], max_new_tokens: int, schemas: list[dict] | None = None) -> list[str]:
        """Greedy answers in batches. The prefix a batch's prompts share (the system prompt and widget catalog) is run
        once and its keys and values serve every row, which then holds `[prefix | padding | rest of its prompt]`:
        positions follow the attention mask, so each answer is the one its prompt alone would get."""
        import torch

        from rl.prefix_sharing import prefix_cache, shared_prefix_length

        outputs: list[str] = []
        pad = self.tokenizer.pad_token_id
        grammars = SchemaGrammars(self.tokenizer, self._causal_lm().config.vocab_size) if schemas is not None else None
        mode = "constrained" if schemas is not None else "free"
        device = self.model.device
        with self._mode():
            for start in tqdm(range(0, len(prompts), self.batch_size), desc=f"{self.name}: generating ({mode})", leave=False):
                chunk = prompts[start : start + self.batch_size]
                common = shared_prefix_length(chunk)
                width = max(len(p) for p in chunk) - common
                pads = [width - (len(p) - common) for p in chunk]
                ids = torch.tensor([list(p[:common]) + [pad] * n + list(p[common:]) for p, n in zip(chunk, pads)], device=device)
                mask = torch.tensor([[1] * common + [0] * n + [1] * (len(p) - common) for p, n in zip(chunk, pads)], device=device)
                cache = prefix_cache(self._causal_lm(), ids[:1, :common], len(chunk)) if common else None
                processors = [grammars.logits_processor(schemas[start : start + len(chunk)])] if grammars is not None else None
                generated = self.model.generate(
                    input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=max_new_tokens, do_sample=False,
                    eos_token_id=_stop_ids(self.tokenizer), pad_token_id=pad, logits_processor=processors,
                )
                outputs += self.tokenizer.batch_decode(generated[:, ids.size(1):], skip_special_tokens=True)
        return outputs


class LlamaCppBackend:
    """A GGUF file through llama.cpp: the artifact Ollama serves."""

    def __init__(self, name: str, gguf_path: str, tokenizer: Any, *, n_ctx: int = 2048, n_threads: int | None = None):
        from llama_cpp import Llama

        self.name, self.tokenizer = name, tokenizer
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=n_threads, seed=0)

    def _token_logps(self, start: int, answer: tuple[int, ...]) -> float:
        import numpy as np

        logits = np.asarray(self.llm.scores[start - 1 : start - 1 + len(answer)], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        return float((logits[np.arange(len(answer)), list(answer)] - log_norm).sum())

    def answer_logps(self, pairs: list[TokenizedPair]) -> list[tuple[float, float, int, int]]:
        by_prompt: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, pair in enumerate(pairs):
            by_prompt[pair.prompt_ids].append(index)
        scores: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
        for prompt, indices in tqdm(by_prompt.items(), desc=f"{self.name}: scoring pairs", leave=False):
            self.llm.reset()
            self.llm.eval(list(prompt))
            for index in indices:
                for answer in (pairs[index].chosen_ids, pairs[index].rejected_ids):
                    if (prompt, answer) not in scores:
                        self.llm.n_tokens = len(prompt)  # drop the previous answer; eval() trims the KV cache to here
                        self.llm.eval(list(answer))
                        scores[(prompt, answer)] = self._token_logps(len(prompt), answer)
        return [
            (scores[(p.prompt_ids, p.chosen_ids)], scores[(p.prompt_ids, p.rejected_ids)], len(p.chosen_ids), len(p.rejected_ids))
            for p in pairs
        ]

    def generate(self, prompts: list[tuple[int, ...]], max_new_tokens: int, schemas: list[dict] | None = None) -> list[str]:
        from llama_cpp import LlamaGrammar

        stops = set(_stop_ids(self.tokenizer))
        outputs = []
        grammars: dict[str, Any] = {}
        mode = "constrained" if schemas is not None else "free"
        for index, prompt in enumerate(tqdm(prompts, desc=f"{self.name}: generating ({mode})", leave=False)):
            grammar = None
            if schemas is not None:
                key = json.dumps(schemas[index], sort_keys=True)
                if key not in grammars:
                    grammars[key] = LlamaGrammar.from_json_schema(json.dumps(schemas[index]), verbose=False)
                grammar = grammars[key]
            self.llm.reset()
            tokens: list[int] = []
            for token in self.llm.generate(list(prompt), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True,
                                           grammar=grammar):
                if token in stops or len(tokens) >= max_new_tokens:
                    break
                tokens.append(token)
            outputs.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return outputs


def preference_metrics(logps: list[tuple[float, float, int, int]], ref_logps: list[tuple[float, float, int, int]] | None = None,
                       beta: float = 0.1) -> dict[str, Any]:
    if not logps:
        return {"n_pairs": 0}
    wins = sum(c > r for c, r, _, _ in logps)
    ties = sum(c == r for c, r, _, _ in logps)
    normalized = sum(c / max(nc, 1) > r / max(nr, 1) for c, r, nc, nr in logps)
    metrics: dict[str, Any] = {
        "n_pairs": len(logps),
        "preference_accuracy": wins / len(logps),
        "preference_accuracy_normalized": normalized / len(logps),
        "preference_ties": ties,
        "mean_logp_chosen": statistics.fmean(c for c, _, _, _ in logps),
        "mean_logp_rejected": statistics.fmean(r for _, r, _, _ in logps),
    }
    if ref_logps is not None:
        margins = [beta * ((c - rc) - (r - rr)) for (c, r, _, _), (rc, rr, _, _) in zip(logps, ref_logps, strict=True)]
        metrics["reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        metrics["mean_reward_margin"] = statistics.fmean(margins)
        metrics["reward_margin_std"] = statistics.pstdev(margins)
    return metrics


def generation_metrics(answers: list[str], cases: list[GenerationCase], catalog: Catalog) -> dict[str, Any]:
    if not cases:
        return {"n_scenarios": 0}
    valid_json = known_widget = valid_picks = widget_hits = fixture_hits = 0
    overlaps: list[float] = []
    failures: Counter = Counter()
    confusion: dict[str, Counter] = defaultdict(Counter)
    for answer, case in zip(answers, cases, strict=True):
        expected_widget = case.expected[0].widget
        try:
            pick = parse_pick(answer, catalog)
        except PickParseError as error:
            failures[error.reason] += 1
            valid_json += error.reason not in ("no_json", "invalid_json")
            known_widget += error.reason == "unknown_fixture"
            confusion[expected_widget][f"<{error.reason}>"] += 1
            overlaps.append(0.0)
            continue
        valid_json += 1
        known_widget += 1
        valid_picks += 1
        matches_widget = [p for p in case.expected if p.widget == pick.widget]
        widget_hits += bool(matches_widget)
        fixture_hits += any(set(p.fixtures) == set(pick.fixtures) for p in case.expected)
        overlaps.append(max(len(set(p.fixtures) & set(pick.fixtures)) / len(set(p.fixtures) | set(pick.fixtures)) for p in case.expected))
        confusion[matches_widget[0].widget if matches_widget else expected_widget][pick.widget] += 1
    n = len(cases)
    true_share: Counter = Counter()
    for case in cases:
        widgets = sorted({p.widget for p in case.expected})
        for widget in widgets:
            true_share[widget] += 1 / len(widgets) / n
    predicted = sum(confusion.values(), Counter())
    predicted_share = {widget: count / n for widget, count in sorted(predicted.items())}
    return {
        "n_scenarios": n,
        "valid_json_rate": valid_json / n,
        "known_widget_rate": known_widget / n,
        "valid_pick_rate": valid_picks / n,
        "widget_accuracy": widget_hits / n,
        "fixture_accuracy": fixture_hits / n,
        "fixture_overlap": statistics.fmean(overlaps),
        "parse_failures": dict(failures),
        "widget_confusion": {expected: dict(row) for expected, row in sorted(confusion.items())},
        "per_widget": per_widget_scores(confusion),
        "predicted_share": predicted_share,
        "true_share": {widget: round(share, 4) for widget, share in sorted(true_share.items())},
        "collapse_warnings": widget_collapse(predicted_share, dict(true_share)),
    }


def per_widget_scores(confusion: dict[str, Counter]) -> dict[str, dict[str, float]]:
    """Precision and recall of each widget from a confusion table (true widget -> answered widget -> count)."""
    widgets = sorted(set(confusion) | {w for row in confusion.values() for w in row if not w.startswith("<")})
    scores = {}
    for widget in widgets:
        hits = confusion.get(widget, {}).get(widget, 0)
        support = sum(confusion.get(widget, {}).values())
        answered = sum(row.get(widget, 0) for row in confusion.values())
        scores[widget] = {
            "precision": hits / answered if answered else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
            "answered": answered,
        }
    return scores


def widget_collapse(predicted_share: dict[str, float], true_share: dict[str, float], factor: float = COLLAPSE_FACTOR) -> list[str]:
    """Warnings for widgets answered more than `factor` times as often as they are right: the model collapsing onto them."""
    warnings = []
    for widget, share in sorted(predicted_share.items(), key=lambda item: -item[1]):
        if widget.startswith("<"):  # a parse failure, not a widget
            continue
        expected = true_share.get(widget, 0.0)
        if share > factor * expected:
            warnings.append(f"{widget} is {share:.0%} of answers but right for {expected:.0%} of questions (more than {factor:g}x its share)")
    return warnings


def evaluate_backend(backend: Backend, evalset: EvalSet, *, ref_logps: list | None = None, beta: float = 0.1,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, decodings: tuple[str, ...] = DECODINGS) -> tuple[dict[str, Any], list]:
    """All metrics for one backend; returns them and the raw log-probs (the reference for a tuned model).

    Free-decoding pick metrics are top-level keys (`widget_accuracy`, ...); constrained ones the same keys prefixed
    `constrained_`."""
    logps = backend.answer_logps(evalset.pairs) if evalset.pairs else []
    metrics: dict[str, Any] = {"model": backend.name, **preference_metrics(logps, ref_logps, beta)}
    prompts = [c.prompt_ids for c in evalset.cases]
    for decoding in decodings:
        schemas = [c.schema for c in evalset.cases] if decoding == "constrained" else None
        answers = backend.generate(prompts, max_new_tokens, schemas) if evalset.cases else []
        prefix = "constrained_" if decoding == "constrained" else ""
        metrics.update({prefix + k: v for k, v in generation_metrics(answers, evalset.cases, evalset.catalog).items()})
        metrics[prefix + "examples"] = [{"scenario_id": c.scenario_id, "answer": a} for c, a in list(zip(evalset.cases, answers))[:5]]
        for warning in metrics.get(prefix + "collapse_warnings", []):
            logger.warning("%s (%s decoding): %s", backend.name, decoding, warning)
    return metrics, logps


PICK_METRICS = ("valid_json_rate", "known_widget_rate", "valid_pick_rate", "widget_accuracy", "fixture_accuracy", "fixture_overlap")
COMPARED = ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy", "mean_reward_margin",
            *PICK_METRICS, *(f"constrained_{m}" for m in PICK_METRICS))


def comparison_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, difference) for the side-by-side table."""
    base, tuned = results.get("base") or {}, results.get("tuned") or {}

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = []
    for key in COMPARED + ("n_pairs", "n_scenarios"):
        a, b = base.get(key), tuned.get(key)
        if a is None and b is None:
            continue
        diff = f"{b - a:+.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and key not in ("n_pairs", "n_scenarios") else ""
        rows.append((key, fmt(a) if key not in ("n_pairs", "n_scenarios") else str(a or "-"),
                     fmt(b) if key not in ("n_pairs", "n_scenarios") else str(b or "-"), diff))
    return rows
