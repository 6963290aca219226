"""KTO rows, their KL rows and class weights; the shared-prompt KTO loss against a plain computation."""
import pytest

from rl.training.kto import TARGET_BALANCE, kto_class_weights, kto_rows


def message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def pair(scenario: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": scenario}], "chosen": message(chosen), "rejected": message(rejected), "scenario_id": scenario}


def unpaired(scenario: str, completion: str, label: bool) -> dict:
    return {"prompt": [{"role": "user", "content": scenario}], "completion": message(completion), "label": label, "scenario_id": scenario}


@pytest.mark.parametrize("ups, downs", [(10, 90), (90, 10), (50, 50), (1, 1000), (7, 6)])
def test_class_weights_put_the_balance_in_trls_recommended_range(ups, downs):
    desirable, undesirable = kto_class_weights(ups, downs)
    assert 1 <= desirable * ups / (undesirable * downs) <= 4 / 3
    assert desirable == pytest.approx(1.0) or undesirable == pytest.approx(1.0)  # TRL: one or the other, not both
    assert desirable * ups / (undesirable * downs) == pytest.approx(TARGET_BALANCE)


def test_class_weights_need_both_thumbs():
    with pytest.raises(ValueError, match="both thumbs"):
        kto_class_weights(5, 0)


def test_pairs_split_into_rows_unpaired_join_and_every_kl_completion_is_another_questions():
    rows = kto_rows([pair("s1", "A", "B"), pair("s1", "A", "C"), pair("s2", "D", "E")],
                    [unpaired("s3", "F", False), unpaired("s1", "A", True)], seed=1)
    seen = {(r["scenario_id"], r["chosen"][0]["content"], r["label"]) for r in rows}
    assert seen == {("s1", "A", True), ("s1", "B", False), ("s1", "C", False), ("s2", "D", True), ("s2", "E", False), ("s3", "F", False)}
    by_answer = {(r["scenario_id"], r["chosen"][0]["content"]) for r in rows}
    for row in rows:
        assert row["rejected"][0]["content"] not in {a for s, a in by_answer if s == row["scenario_id"]}
    assert rows == kto_rows([pair("s1", "A", "B"), pair("s1", "A", "C"), pair("s2", "D", "E")],
                            [unpaired("s3", "F", False), unpaired("s1", "A", True)], seed=1)


def test_one_question_is_not_enough_for_kl_rows():
    with pytest.raises(ValueError, match="two questions"):
        kto_rows([pair("s1", "A", "B")], [], seed=0)


def test_the_shared_prompt_kto_loss_equals_trls_formula_on_separate_rows(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from rl.core.shared_prefix import PrefixSharingCollator, answer_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt, completion, kl_completion = [5, 6, 7, 8], [9, 10, 11], [12, 13]
    batch = PrefixSharingCollator(pad_token_id=0)([{"prompt_ids": prompt, "chosen_ids": completion, "rejected_ids": kl_completion, "label": True}])
    assert batch["label"].tolist() == [1]
    with torch.no_grad():
        shared = answer_logps(model, batch)

        def plain(answer: list[int]) -> float:
            ids = torch.tensor([prompt + answer])
            logps = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), -1)
            return logps.gather(-1, torch.tensor(answer).unsqueeze(-1)).sum().item()

    assert shared.chosen.item() == pytest.approx(plain(completion), abs=1e-4)
    assert shared.rejected.item() == pytest.approx(plain(kl_completion), abs=1e-4)


# (prompt ids, completion ids, desirable?) on the tiny model's vocabulary; every prompt is another question.
KTO_ROWS = [([5, 6, 7, 8], [9, 10, 11], True), ([21, 22, 23], [24, 25], False), ([31, 32, 33, 34, 35], [36, 37, 38, 39], True),
            ([41, 42], [43], False), ([51, 52, 53], [54, 55, 56], False)]


# The trainers' seed draws the adapter's weights; with 7 the batch's KL estimate is positive, so the clamp hides nothing.
KL_POSITIVE_SEED = 7


def kto_trainers(tiny_model_dir, tmp_path, desirable_weight: float, undesirable_weight: float, seed: int = KL_POSITIVE_SEED):
    """Ours and TRL's KTOTrainer, each attaching the same LoRA adapter to its copy of the tiny model, with the same
    weights, not zero (so policy and reference, the model with its adapter off, differ)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, KTOConfig, KTOTrainer

    from rl.core.base_model import load_tokenizer
    from rl.core.shared_prefix import PrefixSharingCollator
    from rl.training.kto import PrefixSharingKTOTrainer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    common = dict(beta=0.2, precompute_ref_log_probs=False, report_to=[], use_cpu=True, bf16=False, per_device_train_batch_size=len(KTO_ROWS), seed=seed)
    text_rows = [unpaired(f"q{i}", f"answer {i}", label) for i, (_, _, label) in enumerate(KTO_ROWS)]
    ours = PrefixSharingKTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), peft_config=lora, args=DPOConfig(output_dir=str(tmp_path / "ours"), loss_type=["sigmoid"], loss_weights=[1.0], max_length=None, **common),
        train_dataset=Dataset.from_list(kto_rows([], text_rows, seed=0)), processing_class=tokenizer,
        data_collator=PrefixSharingCollator(tokenizer.pad_token_id), desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)
    trls = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), peft_config=lora, args=KTOConfig(output_dir=str(tmp_path / "trl"), desirable_weight=desirable_weight,
                                    undesirable_weight=undesirable_weight, **common),
        train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in text_rows]),
        processing_class=tokenizer)
    set_peft_model_state_dict(trls.model, get_peft_model_state_dict(ours.model))
    return ours, trls


def same_rows_for_both(rows):
    """The rows as each collator takes them, with TRL's KL completions (the batch's completions rotated by one) as ours."""
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    from rl.core.shared_prefix import PrefixSharingCollator

    kl = [rows[-1][1]] + [completion for _, completion, _ in rows[:-1]]
    trl_batch = DataCollatorForUnpairedPreference(pad_token_id=0)(
        [{"prompt_ids": p, "completion_ids": c, "KL_completion_ids": k, "label": label} for (p, c, label), k in zip(rows, kl)])
    our_batch = PrefixSharingCollator(pad_token_id=0)(
        [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": k, "label": label} for (p, c, label), k in zip(rows, kl)])
    return trl_batch, our_batch


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.75, 1.0), (1.0, 0.6)])
def test_the_shared_prompt_kto_loss_equals_trls_kto_trainer_on_the_same_rows(tiny_model_dir, tmp_path, weights):
    import torch

    ours, trls = kto_trainers(tiny_model_dir, tmp_path, *weights)
    trl_batch, our_batch = same_rows_for_both(KTO_ROWS)
    ours.model.train(), trls.model.train()
    with torch.no_grad():
        trl_loss = trls._compute_loss(trls.model, trl_batch, False)
        our_loss = ours._compute_loss(ours.model, our_batch, False)
    assert trls._metrics["train"]["kl"][-1] > 0  # the KL estimate is in play, not clamped away
    assert our_loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    assert ours._metrics["train"]["kl"][-1] == pytest.approx(trls._metrics["train"]["kl"][-1], rel=1e-4, abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert ours._metrics["train"][name][-1] == pytest.approx(trls._metrics["train"][name][-1], rel=1e-4, abs=1e-5), name


def test_a_few_kto_steps_lower_the_loss_on_their_rows(tiny_model_dir, tmp_path):
    import torch

    ours, _ = kto_trainers(tiny_model_dir, tmp_path, 1.0, 1.0)
    model = ours.model
    _, batch = same_rows_for_both(KTO_ROWS)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(8):
        loss = ours._compute_loss(model, batch, False)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0] - 0.01, losses
