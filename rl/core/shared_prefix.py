"""The shared-prefix maths: each prompt computed once per batch instead of twice per pair, and the batch's common prefix once.

The pairs of a batch that share a prompt (the same scenario) become one group `[prompt | answer_1 | answer_2 | ...]`
holding every distinct answer once, and the tokens that answers begin with alike once (`answer_tree`: a pair that
differs in its fixtures shares the ~10 tokens of `{"widget": "...", "fixtures": ["`; 30% of the natural set's answer
tokens). The prefix that all the batch's prompts share (on this task the system prompt and the widget catalog, about
half of each prompt) is computed once: run alone, its keys and values are reused by
every group's row (or, under gradient checkpointing, which turns that cache off, the groups are packed into rows after
one copy of it). Position ids follow each prompt's own positions, and a 4D attention mask lets an answer see only its
prompt and itself, so each answer is scored exactly as if it followed its prompt alone. A pair costs a fraction of the
compute and activation memory of TRL's `[prompt | chosen]` + `[prompt | rejected]` rows, and the LM head runs only on
answer positions. Training (`rl/training/prefix_sharing.py`) and evaluation (`rl/evaluation/backends.py`) both use it.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from rl.core.frozen_layers import LayerInput, layer_input_captured, starting_at
from rl.core.prompts import decision_length


def shared_prefix_length(prompts: list[tuple[int, ...]]) -> int:
    """How many leading tokens all of `prompts` share, leaving at least one token of each out (so no prompt's own
    part is empty); 0 for fewer than two distinct prompts."""
    if len(set(prompts)) < 2:
        return 0
    return min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)


def answer_tree(answers: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """For each answer of a prompt, in order: how many leading tokens it shares with an earlier answer (the most it
    shares with any), and which one (-1: none). Answers that begin alike (on this task `{"widget": "<id>",
    "fixtures": ["` for a pair that differs in its fixtures) then hold those tokens once, as the nodes of a token tree."""
    tree = []
    for index, answer in enumerate(answers):
        shared, via = 0, -1
        for earlier in range(index):
            length = len(os.path.commonprefix([answers[earlier], answer]))
            if length > shared:
                shared, via = length, earlier
        tree.append((shared, via))
    return tree


@dataclass
class PrefixSharingCollator:
    """TRL-tokenized preference rows (prompt_ids, chosen_ids, rejected_ids) -> shared-prefix batches.

    A prompt group is one prompt and its distinct answers, laid out as a token tree (`answer_tree`): an answer's
    tokens after those it shares with an earlier one, which it sees as it sees its prompt. `common` is the prefix all
    the batch's prompts share (the task's system prompt and widget catalog), computed once per batch:
    - with `prefix_cache` (the default) it is returned as `prefix_ids`, run once, and its keys and values serve every
      row (`answer_logps`); each row holds one group `[rest of prompt | answers]`, so no attention is spent between
      groups. Not with gradient checkpointing, which turns the cache off inside the layers;
    - without, the groups are packed into rows `[common | rest of prompt 1 | answers 1 | rest of prompt 2 | ...]`,
      a row taking groups until it would pass `row_tokens` (always at least one).
    `score_index[r, j]` is the row position whose hidden state predicts `score_target[r, j]`, a token of answer
    `score_answer[r, j]` (-1: padding). Pair b's answers are `pair_chosen[b]` and `pair_rejected[b]`. `row_groups[r]`:
    how many prompt groups row r holds.
    """

    pad_token_id: int
    eager_attention: bool = False
    # Weight of a chosen answer's tokens after its decision (the title) in the SFT term; decision tokens weigh 1.
    title_weight: float = 1.0
    prefix_cache: bool = True
    row_tokens: int = 2048
    # Rows are padded to a multiple of this many tokens (`row_lengths` says how far each row's own tokens and padding
    # reach), so that batches repeat a few shapes: oneDNN caches kernels and buffers per matrix shape, and with a new
    # shape at every row a bf16 run's memory grew at every step.
    pad_to_multiple_of: int = 32

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        answer_ids: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        pair_chosen, pair_rejected = [], []
        decision_tokens: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        for example in examples:
            prompt = tuple(example["prompt_ids"])
            answers = groups.setdefault(prompt, [])
            indices = []
            for side in ("chosen_ids", "rejected_ids"):
                key = (prompt, tuple(example[side]))
                if key not in answer_ids:
                    answer_ids[key] = len(answer_ids)
                    answers.append(key[1])
                indices.append(answer_ids[key])
            pair_chosen.append(indices[0])
            pair_rejected.append(indices[1])
            if "chosen_decision_tokens" in example:
                decision_tokens[(prompt, tuple(example["chosen_ids"]))] = int(example["chosen_decision_tokens"])

        common = shared_prefix_length(list(groups))
        cached = self.prefix_cache and common > 0
        cache_len = common if cached else 0  # key/value positions ahead of each row's own: the cached prefix
        in_row = 0 if cached else common  # tokens of the common part inside each row
        rows: list[list[tuple[int, ...]]] = []
        row_lengths: list[int] = []
        trees = {prompt: answer_tree(answers) for prompt, answers in groups.items()}
        for prompt, answers in groups.items():
            size = len(prompt) - common + sum(len(a) - shared for a, (shared, _via) in zip(answers, trees[prompt]))
            if cached or not rows or row_lengths[-1] + size > self.row_tokens:
                rows.append([])
                row_lengths.append(in_row)
            rows[-1].append(prompt)
            row_lengths[-1] += size

        padded_lengths = [-(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of for length in row_lengths]
        width, n_rows = max(padded_lengths), len(rows)
        n_scored = max(sum(len(a) for p in row for a in groups[p]) for row in rows)
        input_ids = torch.full((n_rows, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((n_rows, width), dtype=torch.long)
        # Key columns: the cached prefix's positions first (if any), then the row's own.
        allowed = torch.zeros((n_rows, width, cache_len + width), dtype=torch.bool)
        own = slice(cache_len, cache_len + width)
        score_index = torch.zeros((n_rows, n_scored), dtype=torch.long)
        score_target = torch.zeros((n_rows, n_scored), dtype=torch.long)
        score_answer = torch.full((n_rows, n_scored), -1, dtype=torch.long)
        score_weight = torch.zeros((n_rows, n_scored), dtype=torch.float32)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for r, row in enumerate(rows):
            keys = allowed[r, :, own]
            if in_row:
                input_ids[r, :in_row] = torch.tensor(row[0][:in_row])
                position_ids[r, :in_row] = torch.arange(in_row)
                keys[:in_row, :in_row] = causal[:in_row, :in_row]
            start, scored = in_row, 0
            for prompt in row:
                # The rest of the prompt sees the common part and itself; each answer sees the whole prompt and itself.
                p, rest = len(prompt), len(prompt) - common
                prompt_start, prompt_end = start, start + rest
                input_ids[r, prompt_start:prompt_end] = torch.tensor(prompt[common:])
                position_ids[r, prompt_start:prompt_end] = torch.arange(common, p)
                allowed[r, prompt_start:prompt_end, :common] = True  # the cache's columns, or the row's common part
                keys[prompt_start:prompt_end, prompt_start:prompt_end] = causal[:rest, :rest]
                start = prompt_end
                answer_positions: list[list[int]] = []  # of each answer's tokens, in the row
                for answer, (shared, via) in zip(groups[prompt], trees[prompt]):
                    # Its first `shared` tokens are those of an earlier answer (`via`), already in the row: only the
                    # rest is laid out, and it sees them as it sees its prompt.
                    n, ancestors = len(answer), answer_positions[via][:shared] if shared else []
                    end = start + n - shared
                    input_ids[r, start:end] = torch.tensor(answer[shared:])
                    position_ids[r, start:end] = torch.arange(p + shared, p + n)
                    allowed[r, start:end, :common] = True
                    keys[start:end, prompt_start:prompt_end] = True
                    if ancestors:
                        keys[start:end, ancestors] = True
                    keys[start:end, start:end] = causal[: end - start, : end - start]
                    answer_positions.append(ancestors + list(range(start, end)))
                    score_index[r, scored : scored + n] = torch.tensor([prompt_end - 1] + answer_positions[-1][:-1])
                    score_target[r, scored : scored + n] = torch.tensor(answer)
                    score_answer[r, scored : scored + n] = answer_ids[(prompt, answer)]
                    decision = decision_tokens.get((prompt, answer), n)
                    score_weight[r, scored : scored + n] = torch.tensor([1.0 if i < decision else self.title_weight for i in range(n)])
                    start, scored = end, scored + n
            pad = torch.arange(start, width)
            keys[pad, pad] = True  # padding rows see themselves only, so no row is fully masked (NaN in SDPA)
        mask = allowed.unsqueeze(1)
        if self.eager_attention:
            mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)
        out = {
            "input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
            "score_index": score_index, "score_target": score_target, "score_answer": score_answer, "score_weight": score_weight,
            "pair_chosen": torch.tensor(pair_chosen), "pair_rejected": torch.tensor(pair_rejected),
            "num_answers": torch.tensor(len(answer_ids)), "num_tokens": torch.tensor(cache_len + sum(row_lengths)),
            "row_lengths": torch.tensor(padded_lengths), "row_groups": torch.tensor([len(row) for row in rows]),
        }
        if cached:
            out["prefix_ids"] = torch.tensor([next(iter(groups))[:common]])
        for key in ("ref_chosen_logps", "ref_rejected_logps", "label", "pair_index"):
            if key in examples[0]:
                out[key] = torch.tensor([e[key] for e in examples])
        return out


@dataclass
class AnswerLogps:
    token_logps: torch.Tensor  # (groups, n_scored), 0 on padding
    token_weights: torch.Tensor  # (groups, n_scored) SFT weight of each token (decision 1, title `title_weight`)
    chosen: torch.Tensor  # (pairs,) summed log-probs of each pair's chosen answer
    rejected: torch.Tensor  # (pairs,)
    chosen_token_mask: torch.Tensor  # (groups, n_scored) tokens of answers that are some pair's chosen one


def prefix_cache(causal_lm: Any, prefix_ids: torch.Tensor, rows: int, past: Any = None) -> Any:
    """The keys and values of `prefix_ids` (one row), computed once by the model's backbone (no LM head) and repeated
    for `rows` rows, so every row of a batch continues from the same prefix. `past`: the keys and values of its first
    tokens, when already computed; only the tokens after them are run."""
    done = 0 if past is None else past.get_seq_length()
    cache = past
    if done < prefix_ids.size(1):
        backbone = getattr(causal_lm, causal_lm.base_model_prefix)
        positions = torch.arange(done, prefix_ids.size(1), device=prefix_ids.device).unsqueeze(0)
        cache = backbone(input_ids=prefix_ids[:, done:], position_ids=positions, cache=past, use_cache=True).cache
    if cache is None or cache.get_seq_length() != prefix_ids.size(1):
        raise RuntimeError("The model returned no key/value cache for the shared prefix (gradient checkpointing turns it "
                           "off): build the collator with prefix_cache=False.")
    if rows > 1:
        cache.batch_repeat_interleave(rows)
    return cache


def has_sliding_window(layers: Any) -> bool:
    """Whether a layer of a cache (or of its list of layers) keeps a sliding window, whose keys and values drop old
    positions and so are not the whole sequence's."""
    return any(len(layer) > 2 and layer[2] is not None for layer in layers)


class ReusedPrefix:
    """A frozen model's keys and values of the last prefix it ran, reused for the part that the next prefix shares
    with it. For the DPO reference: its batches' prefixes all start with the task's system prompt and widget catalog
    (194 of SmolLM2's ~400 prompt tokens on the demo), which the reference, unlike the policy, computes the same at
    every step.
    Models with sliding-window layers get a fresh prefix every time (a cropped window is not the window)."""

    def __init__(self) -> None:
        self.ids: tuple[int, ...] = ()
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        # The prefix's input to the first adapted layer, when `cache` was asked to keep it (`cache_for_adapted`).
        self.layer_input: LayerInput | None = None

    def cache(self, causal_lm: Any, prefix_ids: torch.Tensor, rows: int, layer_index: int = 0, reuse: bool = True) -> Any:
        """`prefix_cache(causal_lm, prefix_ids, rows)`, computing only the tokens after what it shares with the last
        (with `reuse`; else the whole prefix, still kept). `layer_index` > 0: also keep the prefix's input to that
        layer (`layer_input`)."""
        from transformers import DynamicCache

        ids = tuple(prefix_ids[0].tolist())
        kept = len(os.path.commonprefix([self.ids, ids])) if reuse else 0
        past = DynamicCache(ddp_cache_data=[(keys[:, :, :kept], values[:, :, :kept]) for keys, values in self.layers]) if kept else None
        with layer_input_captured(causal_lm, layer_index) if layer_index else nullcontext([]) as captured:
            cache = prefix_cache(causal_lm, prefix_ids, 1, past=past)
        earlier = self.layer_input if self.layer_input is not None and self.layer_input.index == layer_index else None
        self.layer_input = None
        if layer_index and (kept == 0 or earlier is not None):
            hidden = torch.cat(([earlier.hidden[:, :kept]] if kept else []) + captured, dim=1)
            self.layer_input = LayerInput(layer_index, hidden) if hidden.size(1) == len(ids) else None
        if has_sliding_window(cache):
            self.ids, self.layers, self.layer_input = (), [], None
        else:
            self.ids, self.layers = ids, [(keys, values) for keys, values, *_ in cache]
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    def cache_for_adapted(self, causal_lm: Any, prefix_ids: torch.Tensor) -> Any | None:
        """The keys and values of the last prefix (one row) as `causal_lm` computes it with its adapters on, from the
        first adapted layer up: the layers below it are the frozen pass's (no adapter there), the layers from it run
        from the kept input to it. None when that input was not kept, or the prefix is not the last one."""
        from transformers import DynamicCache

        if self.layer_input is None or tuple(prefix_ids[0].tolist()) != self.ids:
            return None
        first = self.layer_input.index
        upper = DynamicCache()
        positions = torch.arange(len(self.ids), device=prefix_ids.device).unsqueeze(0)
        with starting_at(causal_lm, self.layer_input):
            getattr(causal_lm, causal_lm.base_model_prefix)(inputs_embeds=self.layer_input.hidden, position_ids=positions,
                                                             cache=upper, use_cache=True)
        computed = [(layer.keys, layer.values) for layer in upper.layers[first:]]
        return DynamicCache(ddp_cache_data=self.layers[:first] + computed)


@dataclass
class LeafPrefix:
    """A prefix's keys and values as detached leaves that collect the gradient of every row run against them, for
    running a batch's rows one at a time: `backward()` then sends what they collected through the prefix's graph."""

    layers: list[tuple[Any, ...]]
    originals: list[torch.Tensor]
    leaves: list[torch.Tensor]

    @classmethod
    def of(cls, cache: Any) -> LeafPrefix:
        layers, originals, leaves = [], [], []
        for keys, values, *sliding in cache:
            pair = [tensor.detach().requires_grad_(tensor.requires_grad) for tensor in (keys, values)]
            originals += [keys, values]
            leaves += pair
            layers.append((*pair, *(sliding or [None])))
        return cls(layers, originals, leaves)

    def cache(self) -> Any:
        """A fresh cache holding the leaves (a row's forward appends its own keys and values to the cache it gets)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=self.layers)

    def backward(self) -> None:
        collected = [(original, leaf.grad) for original, leaf in zip(self.originals, self.leaves, strict=True) if leaf.grad is not None]
        if collected:
            torch.autograd.backward([original for original, _ in collected], [grad for _, grad in collected])


def row_of_batch(batch: dict[str, torch.Tensor], row: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Row `row` of a shared-prefix batch as a batch of its own, trimmed of its padding, with the pairs whose answers
    it holds; returns it and those pairs' indices in the batch. The prefix (`prefix_ids`) is left to the caller."""
    length = int(batch["row_lengths"][row])
    answers = batch["score_answer"][row]
    pairs = torch.isin(batch["pair_chosen"], answers[answers >= 0]).nonzero().squeeze(-1)
    mask = batch["attention_mask"][row : row + 1, :, :length]
    cached = mask.size(-1) - batch["input_ids"].size(1)
    sub = {
        "input_ids": batch["input_ids"][row : row + 1, :length], "position_ids": batch["position_ids"][row : row + 1, :length],
        "attention_mask": mask[..., : cached + length],
        "pair_chosen": batch["pair_chosen"][pairs], "pair_rejected": batch["pair_rejected"][pairs],
        "num_answers": batch["num_answers"],
    }
    for key in ("score_index", "score_target", "score_answer", "score_weight"):
        if key in batch:
            sub[key] = batch[key][row : row + 1]
    return sub, pairs


def answer_logps(causal_lm: Any, batch: dict[str, torch.Tensor], cache: Any = None,
                 layer_input: LayerInput | None = None) -> AnswerLogps:
    """Log-probs of every answer in a shared-prefix batch, per token and summed per pair side. `cache`: the prefix's
    keys and values for the batch's rows, when the caller computed them (else computed here from `prefix_ids`).
    `layer_input`: the rows' input to a decoder layer, already computed (`rl/core/frozen_layers.py`): the forward
    starts at that layer."""
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    if cache is None and "prefix_ids" in batch:
        cache = prefix_cache(causal_lm, batch["prefix_ids"], batch["input_ids"].size(0))
    tokens = {"input_ids": batch["input_ids"]} if layer_input is None else {"inputs_embeds": layer_input.hidden}
    with starting_at(causal_lm, layer_input):
        hidden = backbone(
            **tokens, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"], cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state
    index = batch["score_index"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    token_logps = _token_logps(causal_lm.get_output_embeddings(), hidden.gather(1, index), batch["score_target"])
    answer = batch["score_answer"]
    valid = answer >= 0
    token_logps = token_logps * valid
    n_answers = int(batch["num_answers"])
    per_answer = torch.zeros(n_answers, dtype=token_logps.dtype, device=token_logps.device)
    per_answer = per_answer.index_add(0, answer[valid], token_logps[valid])
    weights = batch.get("score_weight", valid.float())
    return AnswerLogps(token_logps, weights, per_answer[batch["pair_chosen"]], per_answer[batch["pair_rejected"]], chosen_tokens(batch))


def answer_logps_after_frozen_prompt(causal_lm: Any, row: dict[str, torch.Tensor], cache: Any = None,
                                     layer_input: LayerInput | None = None, gradient_tokens: int = 1) -> AnswerLogps:
    """`answer_logps` of a one-row batch holding one prompt group (`row_groups` 1: every row of a batch with the
    prefix cached), with its prompt run forward without gradient up to its last `gradient_tokens` tokens: those get
    their keys and values under `torch.no_grad`, and the prompt's last `gradient_tokens` (1: only the last, whose hidden
    state predicts each answer's first token) and the answers run with gradient against them. The log-probs are the
    whole forward's; the gradient is what reaches the weights through the tokens run with it, none through the earlier
    prompt's (the stop-gradient Transformer-XL puts on its memory). `cache`: the prefix's keys and values (not changed:
    the prompt's are added to a copy), never back-propagated here."""
    from transformers import DynamicCache

    if row["input_ids"].size(0) != 1:
        raise ValueError("answer_logps_after_frozen_prompt scores one row (one prompt group) at a time.")
    scored_positions = row["score_index"][0][row["score_answer"][0] >= 0]
    split = max(int(scored_positions.min()) - (gradient_tokens - 1), 0) if scored_positions.numel() else 0
    cached = row["attention_mask"].size(-1) - row["input_ids"].size(1)
    layers = [] if cache is None else [(keys, values, *rest) for keys, values, *rest in cache]
    if cached and len(layers) == 0:
        raise ValueError("The row's mask reads a cached prefix; pass its keys and values as `cache`.")
    past = DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()
    if split == 0:  # the tokens to run with gradient begin the row: nothing to run without
        return answer_logps(causal_lm, row, cache=past if layers else None, layer_input=layer_input)
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    prompt = {"input_ids": row["input_ids"][:, :split]} if layer_input is None else {"inputs_embeds": layer_input.hidden[:, :split]}
    with torch.no_grad(), starting_at(causal_lm, layer_input):
        backbone(**prompt, attention_mask=row["attention_mask"][..., :split, : cached + split],
                 position_ids=row["position_ids"][:, :split], cache=past, use_cache=True)
    rest = dict(row)
    rest.update(input_ids=row["input_ids"][:, split:], position_ids=row["position_ids"][:, split:],
                attention_mask=row["attention_mask"][..., split:, :], score_index=(row["score_index"] - split).clamp(min=0))
    rest_input = None if layer_input is None else LayerInput(layer_input.index, layer_input.hidden[:, split:])
    return answer_logps(causal_lm, rest, cache=past, layer_input=rest_input)


# Without gradients (reference and evaluation passes) the LM head runs on this many scored positions at a time, so that
# a batch's full-vocabulary logits (fp32 and their log-softmax: 0.12 GB for 4 pairs of SmolLM2) are never all held.
SCORED_POSITIONS_PER_CHUNK = 64


def _token_logps(lm_head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(rows, n_scored): the log-prob of each target token from the hidden state that predicts it."""
    def of(part: torch.Tensor, part_targets: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(lm_head(part).float(), dim=-1).gather(-1, part_targets.unsqueeze(-1)).squeeze(-1)

    if torch.is_grad_enabled() or targets.numel() <= SCORED_POSITIONS_PER_CHUNK:
        return of(hidden, targets)
    flat, flat_targets = hidden.reshape(-1, hidden.size(-1)), targets.reshape(-1)
    parts = [of(flat[i : i + SCORED_POSITIONS_PER_CHUNK], flat_targets[i : i + SCORED_POSITIONS_PER_CHUNK])
             for i in range(0, flat.size(0), SCORED_POSITIONS_PER_CHUNK)]
    return torch.cat(parts).view_as(targets)


def chosen_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(rows, n_scored): which scored tokens belong to an answer that is some pair's chosen one."""
    answer = batch["score_answer"]
    is_chosen = torch.zeros(int(batch["num_answers"]), dtype=torch.bool, device=answer.device)
    is_chosen[batch["pair_chosen"]] = True
    return (answer >= 0) & is_chosen[answer.clamp(min=0)]


def decision_token_count(tokenizer: Any, answer_ids: list[int]) -> int:
    """How many leading tokens of an answer carry its decision (fixtures, widget): those before the title."""
    text = tokenizer.decode(answer_ids, skip_special_tokens=True)
    decision_chars = decision_length(text)
    if decision_chars >= len(text):
        return len(answer_ids)
    for count in range(1, len(answer_ids) + 1):
        if len(tokenizer.decode(answer_ids[:count], skip_special_tokens=True)) > decision_chars:
            return count
    return len(answer_ids)
