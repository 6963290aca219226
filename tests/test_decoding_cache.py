"""Decoding writes each token's keys and values into room kept after the cache's (rl/evaluation/decoding_cache.py)."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, DynamicCache
from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, DynamicLayer

from rl.evaluation import decoding_cache
from rl.evaluation.backends import TorchBackend
from rl.evaluation.decoding_cache import GrowingLayer, growing_cache
from tests.test_constrained_decoding import _cases, _prompt_reading_model


def _states(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=generator), torch.randn(rows, 2, length, 4, generator=generator)


def test_a_growing_layer_holds_what_concatenation_holds_and_copies_only_when_its_room_is_used():
    layer, plain = GrowingLayer(room=8), DynamicLayer()
    buffers = set()
    for step, length in enumerate([5] + [1] * 40):
        keys, values = _states(3, length, step)
        got, expected = layer.update(keys, values), plain.update(keys, values)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert got[0].data_ptr() == layer._buffers[0].data_ptr()  # a view of the buffer, not a copy
        buffers.add(layer._buffers[0].data_ptr())
    assert layer.get_seq_length() == 45
    assert len(buffers) == 5  # 45 positions: the first 5 with room for 8 more, then a new buffer each 8 (every token with cat)
    assert DYNAMIC_LAYER_TYPE_MAPPING["full_attention"] is DynamicLayer  # transformers' own caches are left as they were


@pytest.mark.parametrize("change", ["repeat", "select", "crop"])
def test_a_growing_layer_appends_rightly_after_its_rows_or_length_change(change):
    layer, plain = GrowingLayer(room=16), DynamicLayer()
    keys, values = _states(2, 6, 0)
    layer.update(keys, values), plain.update(keys, values)
    before = layer.keys
    kept = before.clone()
    for cache_layer in (layer, plain):
        if change == "repeat":
            cache_layer.batch_repeat_interleave(2)
        elif change == "select":
            cache_layer.batch_select_indices(torch.tensor([1]))
        else:
            cache_layer.crop(-3)
    rows = {"repeat": 4, "select": 1, "crop": 2}[change]
    keys, values = _states(rows, 2, 1)
    got, expected = layer.update(keys, values), plain.update(keys, values)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert torch.equal(before, kept)  # what a caller held before the change is not overwritten by later appends


def _spy(monkeypatch):
    """Records the layers of every cache that generation gets."""
    made = []

    def recording(cache, config):
        cache = growing_cache(cache, config)
        made.append(cache.layers)
        return cache

    monkeypatch.setattr(decoding_cache, "growing_cache", recording)
    return made


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("scored_first", [False, True])
def test_answers_decoded_into_growing_caches_equal_those_of_transformers_own_cache(tiny_model_dir, monkeypatch, constrained, scored_first):
    from rl.evaluation.evalset import TokenizedPair

    model = _prompt_reading_model(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _scenarios, cases = _cases(tokenizer)
    prompts = [c.prompt_ids for c in cases]
    schemas = [c.schema for c in cases] if constrained else None
    answers = [tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in ('{"widget": "kpi_card"}', '{"widget": "table"}')]

    def answer() -> list[str]:
        backend = TorchBackend("tiny", model, tokenizer, batch_size=3, generation_batch_size=4)
        if scored_first:  # generation then starts from the scored prompts' kept keys and values
            backend.answer_logps([TokenizedPair(p, *answers) for p in prompts])
        return backend.generate(prompts, 30, schemas)

    made = _spy(monkeypatch)
    growing = answer()
    assert len(made) == 2 and all(type(layer) is GrowingLayer for layers in made for layer in layers)
    assert all(layer.get_seq_length() > len(prompts[0]) for layers in made for layer in layers)  # they held the answers
    monkeypatch.setattr(decoding_cache, "growing_cache", lambda cache, config: cache if cache is not None else DynamicCache())
    assert growing == answer()
    assert len(set(growing)) > 1
