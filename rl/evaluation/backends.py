"""Two backends that score and generate on the SAME token ids: `TorchBackend` (a transformers model, with or without its
LoRA adapter) and `LlamaCppBackend` (a GGUF file through llama.cpp, i.e. the artifact that will be served).

Generation is greedy, free or constrained to the prompt's answer schema (`rl.core.prompts.answer_schema`) through a
grammar: xgrammar for PyTorch, llama.cpp's JSON-schema grammar for a GGUF.
"""
from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from rl.core.allocator import bound_freed_pages
from rl.core.prompts import ANSWER_TOKEN_LIMIT
from rl.evaluation.evalset import TokenizedPair
from rl.evaluation.prompt_cache import PromptKeyValues

if TYPE_CHECKING:
    from rl.evaluation.lower_layers import LowerLayers

DEFAULT_MAX_NEW_TOKENS = ANSWER_TOKEN_LIMIT
DECODINGS = ("free", "constrained")


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

    The grammar writes JSON exactly as `rl.core.prompts.render_pick` does (", " and ": " separators, no other whitespace),
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


BF16_WEIGHTS = "bf16 weights"  # evaluation_precision() where the evaluated model's weights are cast to bfloat16


def evaluation_precision() -> str:
    """How PyTorch models are evaluated here: "bf16 weights" (the evaluated model's weights cast to bfloat16) on a CPU
    where bfloat16 measured faster than fp32 (`rl.core.cpu_precision`) unless settings.RL_EVALUATION_BF16 is off, else
    "fp32". Weights, not autocast over fp32 ones: autocast casts every frozen weight again on every call, which in a
    decoding step of a few rows costs as much as the matrix product (natural set, adapter: 64 questions answered in
    28 s instead of 35, 258 of their pairs scored in 25 s instead of 30)."""
    from django.conf import settings

    from rl.core import base_model, cpu_precision

    bf16 = getattr(settings, "RL_EVALUATION_BF16", True) and not base_model.has_cuda() and cpu_precision.cpu_bf16_is_faster()
    return BF16_WEIGHTS if bf16 else "fp32"


def evaluation_model(base_id: str | None, adapter_dir: Any = None) -> Any:
    """The model as evaluation runs it: the base, with the adapter of `adapter_dir` (if any) merged into its fp32
    weights (no LoRA layers left to run at every step), then cast to bfloat16 where `evaluation_precision()` says so."""
    import torch

    from rl.core.base_model import load_causal_lm

    model = load_causal_lm(base_id)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if evaluation_precision() == BF16_WEIGHTS:
        model = model.to(torch.bfloat16)
    return model.eval()


class TorchBackend:
    """A transformers model (as `evaluation_model` loads it, or a PEFT model in training, scored with its adapter). It
    runs under bfloat16 autocast when `bf16_autocast` is true (a model training under it); evaluation casts the weights
    instead (`evaluation_model`).

    Pairs are scored `batch_size` at a time (the answer tokens' logits over the whole vocabulary are what bounds it;
    the base's 320 natural pairs took 30 s in batches of 8, 24 s of 16 and 22 s of 32, as fewer batches compute the
    shared prefix fewer times); answers
    are generated `generation_batch_size` at a time, since a decoding step costs little more for more rows on a CPU:
    48 natural questions took 46 s in batches of 8, 30 s of 16 and 26 s of 48 (SmolLM2 with an adapter, 2 cores)."""

    def __init__(self, name: str, model: Any, tokenizer: Any, *, batch_size: int = 32, generation_batch_size: int = 32,
                 bf16_autocast: bool = False, lower_layers: LowerLayers | None = None):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.batch_size, self.generation_batch_size = batch_size, generation_batch_size
        self.bf16_autocast = bf16_autocast
        self.prompt_key_values = PromptKeyValues()
        self._prefix: Any = None  # the last batch's prefix keys and values (`ReusedPrefix`), made on first use
        # The base's pass records its rows' inputs to the adapter's lowest layer there; the tuned model's starts from them.
        self.lower_layers = lower_layers

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        import torch

        self.model.eval()
        autocast = torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast)
        with torch.no_grad(), autocast:
            yield

    def _causal_lm(self) -> Any:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _prefix_cache(self, prefix_ids: Any, rows: int) -> Any:
        """The keys and values of a batch's common prefix for its rows, computing only the tokens after those it
        shares with the last batch's (on this task, consecutive batches share the system prompt and widget catalog):
        the model does not change while a backend lives."""
        from rl.core.shared_prefix import ReusedPrefix

        if self._prefix is None:
            self._prefix = ReusedPrefix()
        return self._prefix.cache(self._causal_lm(), prefix_ids, rows)

    def answer_logps(self, pairs: list[TokenizedPair]) -> list[tuple[float, float, int, int]]:
        """Also keeps each prompt's keys and values for `generate` (`rl/evaluation/prompt_cache.py`)."""
        from transformers import DynamicCache

        from rl.core.frozen_layers import layer_input_captured
        from rl.core.shared_prefix import PrefixSharingCollator, answer_logps

        eager = getattr(self._causal_lm().config, "_attn_implementation", "sdpa") == "eager"
        collate = PrefixSharingCollator(self.tokenizer.pad_token_id, eager_attention=eager)
        order = sorted(range(len(pairs)), key=lambda i: pairs[i].prompt_ids)
        results: dict[int, tuple[float, float, int, int]] = {}
        with self._mode():
            for start in tqdm(range(0, len(order), self.batch_size), desc=f"{self.name}: scoring pairs", leave=False, disable=None):
                chunk = order[start : start + self.batch_size]
                batch = collate([{"prompt_ids": list(pairs[i].prompt_ids), "chosen_ids": list(pairs[i].chosen_ids),
                                  "rejected_ids": list(pairs[i].rejected_ids)} for i in chunk])
                batch = {k: v.to(self.model.device) for k, v in batch.items()}
                prompts = list(dict.fromkeys(pairs[i].prompt_ids for i in chunk))  # the batch's rows, in order
                common = batch["prefix_ids"].size(1) if "prefix_ids" in batch else 0
                if common:
                    cache = self._prefix_cache(batch["prefix_ids"], len(prompts))
                elif len(prompts) == 1:
                    cache = DynamicCache()  # filled by the forward with the whole prompt's keys and values
                else:
                    cache = None  # the collator packs the prompts into shared rows: nothing to keep per prompt
                shared = self.lower_layers if common else None  # batches of one prompt and no prefix run whole
                layer_input = shared.input_for(self._causal_lm(), batch) if shared is not None else None
                recording = shared is not None and shared.records_for(self._causal_lm())
                capture = layer_input_captured(self._causal_lm(), shared.first) if recording else contextlib.nullcontext([])
                with capture as captured:
                    scored = answer_logps(self._causal_lm(), batch, cache=cache, layer_input=layer_input)
                if recording:
                    shared.record(batch, captured[0])
                if cache is not None:  # started at a layer: the layers under it are the base's kept prompts'
                    below, first = (shared.prompt_key_values, shared.first) if layer_input is not None else (None, 0)
                    self.prompt_key_values.keep(cache, prompts, common, below=below, first=first)
                del cache
                bound_freed_pages()
                for j, i in enumerate(chunk):
                    results[i] = (float(scored.chosen[j]), float(scored.rejected[j]), len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))
        return [results[i] for i in range(len(pairs))]

    def generate(self, prompts: list[tuple[int, ...]], max_new_tokens: int, schemas: list[dict] | None = None) -> list[str]:
        """Greedy answers in batches. The prefix a batch's prompts share (the system prompt and widget catalog) is run
        once and its keys and values serve every row, which then holds `[prefix | padding | rest of its prompt]`:
        positions follow the attention mask, so each answer is the one its prompt alone would get. A batch whose
        prompts were all scored by `answer_logps` runs only their last token (`rl/evaluation/prompt_cache.py`). Each
        generated token's keys and values are written into room kept after the cache's (`rl/evaluation/decoding_cache.py`)."""
        import torch

        from rl.core.shared_prefix import shared_prefix_length
        from rl.evaluation.decoding_cache import growing_cache

        pad = self.tokenizer.pad_token_id
        grammars = SchemaGrammars(self.tokenizer, self._causal_lm().config.vocab_size) if schemas is not None else None
        mode = "constrained" if schemas is not None else "free"
        device = self.model.device
        # Kept prompts and the others go in separate batches, so that every batch of kept ones skips its prompts.
        kept = self.prompt_key_values.covers
        kept_ones = [i for i, prompt in enumerate(prompts) if kept([prompt])]
        others = [i for i, prompt in enumerate(prompts) if not kept([prompt])]
        size = self.generation_batch_size
        batches = [part[start : start + size] for part in (kept_ones, others) for start in range(0, len(part), size)]
        outputs: dict[int, str] = {}
        with self._mode():
            for indices in tqdm(batches, desc=f"{self.name}: generating ({mode})", leave=False, disable=None):
                chunk = [prompts[i] for i in indices]
                common = shared_prefix_length(chunk)
                width = max(len(p) for p in chunk) - common
                pads = [width - (len(p) - common) for p in chunk]
                ids = torch.tensor([list(p[:common]) + [pad] * n + list(p[common:]) for p, n in zip(chunk, pads)], device=device)
                mask = torch.tensor([[1] * common + [0] * n + [1] * (len(p) - common) for p, n in zip(chunk, pads)], device=device)
                if kept(chunk):
                    cache = self.prompt_key_values.generation_cache(chunk, common)
                else:
                    cache = self._prefix_cache(ids[:1, :common], len(chunk)) if common else None
                cache = growing_cache(cache, self._causal_lm().config)
                processors = [grammars.logits_processor([schemas[i] for i in indices])] if grammars is not None else None
                generated = self.model.generate(
                    input_ids=ids, attention_mask=mask, cache=cache, max_new_tokens=max_new_tokens, do_sample=False,
                    eos_token_id=_stop_ids(self.tokenizer), pad_token_id=pad, logits_processor=processors,
                )
                bound_freed_pages()
                outputs.update(zip(indices, self.tokenizer.batch_decode(generated[:, ids.size(1):], skip_special_tokens=True)))
        return [outputs[i] for i in range(len(prompts))]


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
        for prompt, indices in tqdm(by_prompt.items(), desc=f"{self.name}: scoring pairs", leave=False, disable=None):
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
        for index, prompt in enumerate(tqdm(prompts, desc=f"{self.name}: generating ({mode})", leave=False, disable=None)):
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
