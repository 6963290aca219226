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
