"""Each evaluated prompt computed once: the pair-scoring pass keeps every prompt's keys and values, and answering the
same prompts afterwards runs only their last token instead of the whole prompt again.

An evaluation scores each question's rated answers (`TorchBackend.answer_logps`) and then answers the same questions
(`TorchBackend.generate`, free and constrained). The prompt's part after the shared system prompt and catalog is
about 180 of SmolLM2's ~400 tokens, and running it again was 45% of answering 32 natural questions (16 of 36 s on two
AVX2 cores). The keys and values of a token depend only on the tokens before it, so those computed under the scoring
pass's layout (`[rest of prompt | answers]` after the cached prefix) serve generation's `[prefix | padding | rest of
prompt]` rows, with positions following the attention mask as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# What the kept keys and values may take: SmolLM2's 158-question natural set holds about 1.3 GB in fp32. Prompts
# scored beyond it are left out, and generation computes them as if nothing were kept.
MAX_BYTES = 2 * 1024**3

Prompt = tuple[int, ...]
Layers = list[tuple["torch.Tensor", "torch.Tensor"]]


class PromptKeyValues:
    """The keys and values of scored prompts, for a model that does not change while they are kept (a backend is
    built per evaluation). The common prefix of a scoring batch is kept once; each prompt keeps the rest."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._prefixes: dict[Prompt, Layers] = {}
        self._rests: dict[Prompt, tuple[Prompt, Layers]] = {}

    def keep(self, cache: Any, prompts: list[Prompt], common: int, *, below: PromptKeyValues | None = None, first: int = 0) -> None:
        """Keep the prompts of a scoring batch from its cache after the forward: `common` positions of the shared
        prefix (the same in every row), then row r's own positions, which begin with `prompts[r][common:]`.

        With `below`: the forward started at layer `first` (`rl/evaluation/lower_layers.py`), so the layers under it
        are taken from `below`'s kept prompts, the same keys and values (nothing kept when it lacks one of them)."""
        from rl.core.shared_prefix import has_sliding_window

        layers = list(cache)[first:]
        if not layers or has_sliding_window(layers):
            return
        prefix = prompts[0][:common]
        new = [p for p in prompts if p not in self._rests]
        if below is not None and not (all(p in below._rests and below._rests[p][0] == prefix for p in new)
                                      and (prefix in self._prefixes or prefix in below._prefixes)):
            return
        per_token = sum(keys[0, :, :1].numel() * keys.element_size() * 2 for keys, _values, *_ in layers)
        added = sum(len(p) - common for p in new) + (common if prefix not in self._prefixes else 0)
        if self.bytes + added * per_token > self.max_bytes:
            return
        self.bytes += added * per_token
        if prefix not in self._prefixes:
            lower = below._prefixes[prefix][:first] if below is not None else []
            self._prefixes[prefix] = lower + [(keys[:1, :, :common].clone(), values[:1, :, :common].clone()) for keys, values, *_ in layers]
        for row, prompt in enumerate(prompts):
            if prompt not in self._rests:
                own = slice(common, len(prompt))
                lower = below._rests[prompt][1][:first] if below is not None else []
                self._rests[prompt] = (prefix, lower + [(keys[row : row + 1, :, own].clone(), values[row : row + 1, :, own].clone())
                                                        for keys, values, *_ in layers])

    def covers(self, prompts: list[Prompt]) -> bool:
        return all(prompt in self._rests for prompt in prompts)

    def generation_cache(self, prompts: list[Prompt], common: int) -> Any:
        """The keys and values of the rows `[prompt[:common] | padding | prompt[common:]]` (as `TorchBackend.generate`
        lays them out) for all but their last position, which generation runs to get the first answer token's
        logits. Padding positions hold zeros; the attention mask hides them."""
        import torch
        from transformers import DynamicCache

        width = max(len(p) for p in prompts) - common
        layers = []
        for index in range(len(self._rests[prompts[0]][1])):
            sides = []
            for side in (0, 1):  # keys, values
                rows = []
                for prompt in prompts:
                    prefix, rest = self._rests[prompt]
                    whole = torch.cat([self._prefixes[prefix][index][side], rest[index][side]], dim=2)
                    padding = whole.new_zeros(*whole.shape[:2], width - (len(prompt) - common), whole.size(3))
                    rows.append(torch.cat([whole[:, :, :common], padding, whole[:, :, common : len(prompt) - 1]], dim=2))
                sides.append(torch.cat(rows))
            layers.append(tuple(sides))
        return DynamicCache(ddp_cache_data=layers)
