"""Shared-prefix scoring gives every answer the log-prob it gets after its prompt alone."""
import pytest
import torch

from rl.core.shared_prefix import PrefixSharingCollator, answer_logps


def plain_logp(model, prompt: list[int], answer: list[int]) -> float:
    """The answer's summed log-prob from one ordinary forward pass over [prompt | answer]."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(float(logps[len(prompt) - 1 + i, token]) for i, token in enumerate(answer))


COMMON = [5, 6, 7, 8, 9, 10]
ROWS = [
    {"prompt_ids": COMMON + [11, 12], "chosen_ids": [20, 21, 22], "rejected_ids": [23, 24]},
    {"prompt_ids": COMMON + [11, 12], "chosen_ids": [20, 21, 22], "rejected_ids": [25]},
    {"prompt_ids": COMMON + [13], "chosen_ids": [26, 27], "rejected_ids": [28, 29, 30, 31]},
    {"prompt_ids": COMMON + [14, 15, 16], "chosen_ids": [32], "rejected_ids": [33, 34]},
    # A prompt that is all common prefix but for its last token, and one that differs from the first token on.
    {"prompt_ids": COMMON[:-1] + [40], "chosen_ids": [41, 42], "rejected_ids": [43]},
    {"prompt_ids": [50, 51, 52], "chosen_ids": [53], "rejected_ids": [54, 55]},
]

# Answers that begin alike (as a pair that differs in its widget does): one is the beginning of an answer laid out
# before it, another begins one laid out after it.
TREE_ROWS = [
    {"prompt_ids": COMMON + [11, 12], "chosen_ids": [60, 61, 62, 63], "rejected_ids": [60, 61, 64, 65]},
    {"prompt_ids": COMMON + [11, 12], "chosen_ids": [60, 61, 62, 63], "rejected_ids": [60, 61, 62]},
    {"prompt_ids": COMMON + [13], "chosen_ids": [60, 66], "rejected_ids": [60, 66, 67]},
]


@pytest.mark.parametrize("rows, prefix_cache, row_tokens, expected_rows, expected_cache", [
    (ROWS[:4], True, 2048, 3, True),  # the six common tokens run once as a cache, one row per prompt
    (ROWS[:4], False, 2048, 1, False),  # packed: one row, the six common tokens once
    (ROWS[:4], False, 12, 3, False),  # a small budget splits the groups over rows, each with the common part
    (ROWS, True, 2048, 1, False),  # nothing in common: packed, no cache
    (ROWS[:1], True, 2048, 1, False),
    (TREE_ROWS, True, 2048, 2, True),
    (TREE_ROWS, False, 2048, 1, False),
])
def test_shared_prefix_scores_equal_one_forward_pass_per_answer(tiny_model_dir, rows, prefix_cache, row_tokens, expected_rows,
                                                                expected_cache):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = PrefixSharingCollator(pad_token_id=0, prefix_cache=prefix_cache, row_tokens=row_tokens)(rows)
    assert batch["input_ids"].shape[0] == expected_rows
    assert ("prefix_ids" in batch) == expected_cache
    with torch.no_grad():
        scored = answer_logps(model, batch)
    for i, row in enumerate(rows):
        assert float(scored.chosen[i]) == pytest.approx(plain_logp(model, row["prompt_ids"], row["chosen_ids"]), abs=1e-4)
        assert float(scored.rejected[i]) == pytest.approx(plain_logp(model, row["prompt_ids"], row["rejected_ids"]), abs=1e-4)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_the_common_prefix_is_computed_once(prefix_cache):
    batch = PrefixSharingCollator(pad_token_id=0, prefix_cache=prefix_cache)(ROWS[:4])
    distinct_answers = 3 + 1 + 4 + 2 + 2 + 1 + 2  # [20,21,22] once for the two pairs of the first prompt
    assert int(batch["num_tokens"]) == len(COMMON) + 2 + 1 + 3 + distinct_answers
    if prefix_cache:
        assert batch["prefix_ids"].tolist() == [COMMON]
        assert COMMON[0] not in batch["input_ids"].tolist()[0]
    else:
        assert batch["input_ids"][0, : len(COMMON)].tolist() == COMMON


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_answers_that_begin_alike_hold_their_common_tokens_once(prefix_cache):
    batch = PrefixSharingCollator(pad_token_id=0, prefix_cache=prefix_cache)(TREE_ROWS)
    # [60 61 62 63], then [64 65] after its [60 61], and [60 61 62] all within the first; [60 66], then [67].
    assert int(batch["num_tokens"]) == len(COMMON) + 2 + 1 + (4 + 2 + 0) + (2 + 1)
    assert batch["score_answer"].ge(0).sum() == 4 + 4 + 3 + 2 + 3  # every answer's every token is still scored


@pytest.mark.parametrize("rows", [ROWS[:4], TREE_ROWS])
def test_training_through_the_cached_prefix_gives_the_gradient_of_plain_rows(tiny_model_dir, rows):
    from transformers import AutoModelForCausalLM

    def gradient(model, loss_of):
        model.zero_grad()
        loss_of(model).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = PrefixSharingCollator(pad_token_id=0)(rows)
    assert "prefix_ids" in batch
    def shared(m):  # chosen and rejected, so that a token two answers share gets the gradient of both
        scored = answer_logps(m, batch)
        return scored.chosen.sum() + 0.5 * scored.rejected.sum()

    cached = gradient(model, shared)

    def plain(m):
        total = 0
        for row in rows:
            for side, weight in (("chosen_ids", 1.0), ("rejected_ids", 0.5)):
                ids = torch.tensor([row["prompt_ids"] + row[side]])
                logps = torch.log_softmax(m(ids).logits[0].float(), dim=-1)
                total = total + weight * sum(logps[len(row["prompt_ids"]) - 1 + i, t] for i, t in enumerate(row[side]))
        return total
    assert torch.allclose(cached, gradient(model, plain), atol=1e-4)


def test_each_row_run_alone_against_the_prefix_scores_its_pairs_as_the_whole_batch_does(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rl.core.shared_prefix import LeafPrefix, prefix_cache, row_of_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = PrefixSharingCollator(pad_token_id=0)(ROWS[:4])
    with torch.no_grad():
        whole = answer_logps(model, batch)
        prefix = LeafPrefix.of(prefix_cache(model, batch["prefix_ids"], 1))
        seen = []
        for row in range(batch["input_ids"].size(0)):
            sub, pairs = row_of_batch(batch, row)
            assert sub["input_ids"].size(1) == int(batch["row_lengths"][row])  # trimmed of the batch's padding
            assert sub["input_ids"].size(1) % 32 == 0  # to a multiple of 32 tokens, so shapes repeat across batches
            scored = answer_logps(model, sub, cache=prefix.cache())
            assert torch.allclose(scored.chosen, whole.chosen[pairs], atol=1e-4)
            assert torch.allclose(scored.rejected, whole.rejected[pairs], atol=1e-4)
            seen += pairs.tolist()
    assert sorted(seen) == list(range(4))  # every pair in exactly one row


def test_a_reused_prefix_runs_only_the_tokens_it_does_not_share_with_the_last_and_scores_as_a_fresh_one(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rl.core.shared_prefix import ReusedPrefix

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    run: list[int] = []
    model.model.register_forward_pre_hook(lambda module, args, kwargs: run.append(kwargs["input_ids"].size(1)), with_kwargs=True)
    longer = [{**row, "prompt_ids": COMMON + [11, 12, 60 + i]} for i, row in enumerate(ROWS[:2])]
    other = [{**row, "prompt_ids": [70, 71, 72, 73 + i]} for i, row in enumerate(ROWS[:2])]
    reused = ReusedPrefix()
    # (batch, prefix tokens the reference runs): the first prefix whole; 2 tokens past it; a shorter one cropped from the
    # last (nothing run); one that shares nothing with the last, whole.
    for rows, expected in ((ROWS[:4], [6]), (longer, [2]), (ROWS[2:4], []), (other, [3])):
        batch = PrefixSharingCollator(pad_token_id=0)(rows)
        with torch.no_grad():
            fresh = answer_logps(model, batch)
            del run[:]
            cache = reused.cache(model, batch["prefix_ids"], batch["input_ids"].size(0))
            assert run == expected
            scored = answer_logps(model, batch, cache=cache)
        assert torch.allclose(scored.chosen, fresh.chosen, atol=1e-4) and torch.allclose(scored.rejected, fresh.rejected, atol=1e-4)
    assert reused.ids == (70, 71, 72)


def test_without_gradients_the_lm_head_runs_on_a_few_scored_positions_at_a_time_and_scores_the_same(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = PrefixSharingCollator(pad_token_id=0)(ROWS[:4])
    scored_positions = batch["score_target"].numel()
    whole = answer_logps(model, batch)  # gradients on: one LM head call over every scored position
    calls: list[int] = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, output: calls.append(args[0].size(0)))
    monkeypatch.setattr("rl.core.shared_prefix.SCORED_POSITIONS_PER_CHUNK", 4)
    with torch.no_grad():
        chunked = answer_logps(model, batch)
    assert calls == [4] * (scored_positions // 4) + ([scored_positions % 4] if scored_positions % 4 else [])
    assert torch.allclose(chunked.token_logps, whole.token_logps.detach(), atol=1e-5)
    assert torch.allclose(chunked.chosen, whole.chosen.detach(), atol=1e-4)
    assert torch.allclose(chunked.rejected, whole.rejected.detach(), atol=1e-4)


def _tiny_model_with_an_adapter_on(tiny_model_dir, layers):
    """The tiny model (2 layers) with a LoRA adapter on `layers` (None: all), its B matrices random so that the adapter
    changes what the model computes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=layers, task_type="CAUSAL_LM"))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    return model


def _reference_input_to_layer_1(model, batch):
    """The batch's rows' input to layer 1 from a reference pass (adapter off) over them after their cached prefix."""
    from rl.core.frozen_layers import LayerInput, layer_input_captured
    from rl.core.shared_prefix import prefix_cache

    causal_lm = model.get_base_model()
    with torch.no_grad(), model.disable_adapter():
        reference_prefix = prefix_cache(causal_lm, batch["prefix_ids"], batch["input_ids"].size(0))
        with layer_input_captured(causal_lm, 1) as captured:
            answer_logps(causal_lm, batch, cache=reference_prefix)
    assert len(captured) == 1 and captured[0].shape[:2] == batch["input_ids"].shape  # the rows' pass alone
    return LayerInput(1, captured[0])


def test_rows_started_at_the_first_adapted_layer_from_the_reference_s_input_to_it_score_and_train_as_the_whole_forward(tiny_model_dir):
    from rl.core.frozen_layers import first_adapted_layer
    from rl.core.shared_prefix import LeafPrefix, prefix_cache, row_of_batch

    assert first_adapted_layer(_tiny_model_with_an_adapter_on(tiny_model_dir, None).get_base_model()) == 0
    model = _tiny_model_with_an_adapter_on(tiny_model_dir, [1])
    causal_lm = model.get_base_model()
    assert first_adapted_layer(causal_lm) == 1
    batch = PrefixSharingCollator(pad_token_id=0)(ROWS[:4])
    rows = batch["input_ids"].size(0)
    layer_input = _reference_input_to_layer_1(model, batch)

    def lora_gradient(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])

    whole = answer_logps(causal_lm, batch)
    whole_gradient = lora_gradient(whole.chosen.sum() - whole.rejected.sum())
    lower_calls: list[int] = []
    causal_lm.model.layers[0].register_forward_hook(lambda module, args, output: lower_calls.append(1))
    started = answer_logps(causal_lm, batch, cache=prefix_cache(causal_lm, batch["prefix_ids"], rows), layer_input=layer_input)
    assert lower_calls == [1]  # the policy's prefix only: the rows started at layer 1
    assert len(causal_lm.model.layers) == 2  # the backbone has its layers back
    assert torch.allclose(started.chosen, whole.chosen, atol=1e-5) and torch.allclose(started.rejected, whole.rejected, atol=1e-5)
    assert torch.allclose(lora_gradient(started.chosen.sum() - started.rejected.sum()), whole_gradient, atol=1e-5)

    # Row by row against the prefix's leaves, as the training step runs them.
    model.zero_grad()
    prefix = LeafPrefix.of(prefix_cache(causal_lm, batch["prefix_ids"], 1))
    for row in range(rows):
        sub, pairs = row_of_batch(batch, row)
        scored = answer_logps(causal_lm, sub, cache=prefix.cache(), layer_input=layer_input.row(row, sub["input_ids"].size(1)))
        assert torch.allclose(scored.chosen, whole.chosen[pairs], atol=1e-5)
        (scored.chosen.sum() - scored.rejected.sum()).backward()
    prefix.backward()
    by_rows = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])
    assert (by_rows - whole_gradient).abs().max() <= 1e-5 * whole_gradient.abs().max()  # float sums in another order


def test_the_reference_s_reused_prefix_gives_the_adapted_model_its_prefix_from_the_first_adapted_layer(tiny_model_dir):
    from rl.core.shared_prefix import ReusedPrefix, prefix_cache

    model = _tiny_model_with_an_adapter_on(tiny_model_dir, [1])
    causal_lm = model.get_base_model()
    reused = ReusedPrefix()
    lower_calls: list[int] = []
    causal_lm.model.layers[0].register_forward_hook(lambda module, args, output: lower_calls.append(args[0].size(1)))
    longer = [{**row, "prompt_ids": COMMON + [11, 12, 60 + i]} for i, row in enumerate(ROWS[:2])]
    # The first prefix run whole by the reference, then one 2 tokens past it: the kept input to layer 1 grows with it.
    for rows, reference_ran in ((ROWS[:4], [6]), (longer, [2])):
        batch = PrefixSharingCollator(pad_token_id=0)(rows)
        with torch.no_grad():
            del lower_calls[:]
            with model.disable_adapter():
                reused.cache(causal_lm, batch["prefix_ids"], 1, layer_index=1)
            assert lower_calls == reference_ran
            expected = prefix_cache(causal_lm, batch["prefix_ids"], 1)  # the adapted model's, from its tokens
            del lower_calls[:]
            adapted = reused.cache_for_adapted(causal_lm, batch["prefix_ids"])
        assert lower_calls == []  # layer 0 taken from the reference's pass
        assert adapted.get_seq_length() == batch["prefix_ids"].size(1)
        for (keys, values, _), (expected_keys, expected_values, _) in zip(adapted, expected, strict=True):
            assert torch.allclose(keys, expected_keys, atol=1e-5) and torch.allclose(values, expected_values, atol=1e-5)
        assert not torch.allclose(reused.layers[1][0], expected.layers[1].keys, atol=1e-3)  # the adapter changes layer 1
    assert reused.cache_for_adapted(causal_lm, torch.tensor([[5, 6, 7]])) is None  # not the prefix it ran last


def test_a_cache_with_a_sliding_window_layer_is_neither_reused_nor_kept_for_generation():
    from transformers import DynamicCache

    from rl.core.shared_prefix import has_sliding_window
    from rl.evaluation.prompt_cache import PromptKeyValues

    keys = torch.randn(2, 1, 5, 4)
    full = DynamicCache(ddp_cache_data=[(keys, keys), (keys, keys)])
    windowed = DynamicCache(ddp_cache_data=[(keys, keys), (keys, keys, torch.tensor(3))])
    assert not has_sliding_window(full) and has_sliding_window(windowed)
    prompts = [(1, 2, 7, 8, 9), (1, 2, 5, 6, 4)]
    for cache, kept in ((full, True), (windowed, False)):
        store = PromptKeyValues()
        store.keep(cache, prompts, common=2)
        assert store.covers(prompts) is kept


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_sigmoid_loss_with_label_smoothing_is_conservative_dpo_with_a_finite_best_margin(smoothing):
    from types import SimpleNamespace

    import torch.nn.functional as F

    from rl.training.prefix_sharing import PrefixSharingDPOTrainer

    beta = 0.1
    trainer = SimpleNamespace(loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, label_smoothing=smoothing)
    chosen = torch.tensor([2.0, -1.0, 30.0], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0, 0.0])
    loss = PrefixSharingDPOTrainer._loss_of_pairs(trainer, None, chosen, rejected, {}, 3, torch.tensor(0.0))
    delta = chosen.detach() - rejected
    expected = (-(1 - smoothing) * F.logsigmoid(beta * delta) - smoothing * F.logsigmoid(-beta * delta)).mean()
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    loss.backward()
    # Past the best margin, log((1 - e) / e) / beta (22 nats at e = 0.1), cDPO pulls the pair back; plain DPO pushes on.
    if smoothing:
        assert chosen.grad[2] > 0 and chosen.grad[0] < 0
    else:
        assert (chosen.grad < 0).all()


def _two_pass_logp(model, prompt: list[int], answer: list[int], gradient_tokens: int) -> torch.Tensor:
    """The answer's summed log-prob with its prompt but the last `gradient_tokens` run first without gradient (Hugging
    Face's own key/value cache), and those and the answer with it after."""
    split = len(prompt) - gradient_tokens
    with torch.no_grad():
        past = model(torch.tensor([prompt[:split]]), use_cache=True).past_key_values
    ids = torch.tensor([prompt[split:] + answer])
    logits = model(ids, past_key_values=past, position_ids=torch.arange(split, len(prompt) + len(answer)).unsqueeze(0)).logits
    logps = torch.log_softmax(logits[0].float(), dim=-1)
    return sum(logps[gradient_tokens - 1 + i, token] for i, token in enumerate(answer))


@pytest.mark.parametrize("rows", [ROWS[:4], TREE_ROWS])
@pytest.mark.parametrize("gradient_tokens", [1, 2])
def test_answers_after_a_frozen_prompt_score_as_the_whole_forward_and_take_no_gradient_through_the_prompt(tiny_model_dir, rows, gradient_tokens):
    from transformers import AutoModelForCausalLM

    from rl.core.shared_prefix import answer_logps_after_frozen_prompt, prefix_cache, row_of_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch = PrefixSharingCollator(pad_token_id=0)(rows)
    assert "prefix_ids" in batch and batch["row_groups"].tolist() == [1] * batch["input_ids"].size(0)

    def gradient(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    with torch.no_grad():
        prefix = prefix_cache(model, batch["prefix_ids"], 1)
    total = 0
    for row in range(batch["input_ids"].size(0)):
        sub, pairs = row_of_batch(batch, row)
        scored = answer_logps_after_frozen_prompt(model, sub, cache=prefix, gradient_tokens=gradient_tokens)
        for pair, chosen, rejected in zip(pairs.tolist(), scored.chosen, scored.rejected, strict=True):
            assert float(chosen.detach()) == pytest.approx(plain_logp(model, rows[pair]["prompt_ids"], rows[pair]["chosen_ids"]), abs=1e-4)
            assert float(rejected.detach()) == pytest.approx(plain_logp(model, rows[pair]["prompt_ids"], rows[pair]["rejected_ids"]), abs=1e-4)
        total = total + scored.chosen.sum() + 0.5 * scored.rejected.sum()
    assert prefix.get_seq_length() == len(COMMON)  # the prefix's cache is read, not extended
    frozen = gradient(total)
    # The window never reaches back into the common prefix, which runs without gradient whatever its size.
    windows = [min(gradient_tokens, len(row["prompt_ids"]) - len(COMMON)) for row in rows]
    two_pass = gradient(sum(_two_pass_logp(model, row["prompt_ids"], row["chosen_ids"], window)
                            + 0.5 * _two_pass_logp(model, row["prompt_ids"], row["rejected_ids"], window)
                            for row, window in zip(rows, windows, strict=True)))
    whole_scored = answer_logps(model, batch)
    whole = gradient(whole_scored.chosen.sum() + 0.5 * whole_scored.rejected.sum())
    assert torch.allclose(frozen, two_pass, atol=1e-4)
    assert (frozen - whole).abs().max() > 100 * 1e-4  # the prompt's part of the gradient is left out


def test_answers_after_a_frozen_prompt_started_at_the_first_adapted_layer_score_and_train_as_from_their_tokens(tiny_model_dir):
    from rl.core.shared_prefix import answer_logps_after_frozen_prompt, prefix_cache, row_of_batch

    model = _tiny_model_with_an_adapter_on(tiny_model_dir, [1])
    causal_lm = model.get_base_model()
    batch = PrefixSharingCollator(pad_token_id=0)(ROWS[:4])
    rows = batch["input_ids"].size(0)
    layer_input = _reference_input_to_layer_1(model, batch)
    with torch.no_grad():
        prefix = prefix_cache(causal_lm, batch["prefix_ids"], 1)

    def run(start_at_layer: bool):
        model.zero_grad()
        chosen = []
        for row in range(rows):
            sub, _pairs = row_of_batch(batch, row)
            row_input = layer_input.row(row, sub["input_ids"].size(1)) if start_at_layer else None
            scored = answer_logps_after_frozen_prompt(causal_lm, sub, cache=prefix, layer_input=row_input)
            (scored.chosen.sum() - scored.rejected.sum()).backward()
            chosen.append(scored.chosen.detach())
        return torch.cat(chosen), torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "lora_" in n])

    started, from_tokens = run(True), run(False)
    assert torch.allclose(started[0], from_tokens[0], atol=1e-5)
    assert from_tokens[1].abs().sum() > 0
    assert torch.allclose(started[1], from_tokens[1], atol=1e-5)
