"""An evaluation of base and tuned model computes the layers below the adapter once (`rl/evaluation/lower_layers.py`):
the tuned model's scores and answers are those it computes whole, and its lower layers run only for the prefixes."""
import pytest
import torch

from rl.evaluation.backends import TorchBackend, evaluation_model
from rl.evaluation.evalset import TokenizedPair
from rl.evaluation.lower_layers import LowerLayers, layers_the_adapter_leaves
from tests.test_constrained_decoding import _cases


@pytest.fixture
def base_and_adapter(tiny_model_dir, tmp_path, settings):
    """A prompt-reading random base (2 layers) saved with the tiny model's tokenizer, and a saved LoRA adapter on its
    layer 1 only, with non-zero weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    settings.RL_EVALUATION_BF16 = False
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir, initializer_range=0.2))
    base.save_pretrained(tmp_path / "base")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "base")
    adapted = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1],
                                              init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "adapter")
    return str(tmp_path / "base"), tmp_path / "adapter"


def _pairs_and_prompts(tokenizer):
    _scenarios, cases = _cases(tokenizer)
    prompts, schemas = [c.prompt_ids for c in cases], [c.schema for c in cases]
    answers = [tuple(tokenizer(text, add_special_tokens=False).input_ids) for text in ('{"widget": "kpi_card"}', '{"widget": "table"}')]
    # Batches of 3 pairs: the first prompt alone (no common prefix: computed whole), then batches sharing a prefix.
    pairs = [TokenizedPair(prompts[0], *answers)] + [TokenizedPair(p, a, b) for p in prompts[1:] for a, b in (answers, answers[::-1])]
    return pairs, prompts, schemas


def _layer_zero_row_counts(model):
    """How many rows each forward through layer 0 holds: one for a prefix run alone (or a batch of one prompt), one per
    prompt for a batch's rows."""
    counts: list[int] = []
    model.model.layers[0].register_forward_hook(lambda module, args, output: counts.append(args[0].size(0)))
    return counts


def test_the_adapter_s_lowest_layer_is_read_from_its_saved_config(base_and_adapter, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = base_and_adapter
    assert layers_the_adapter_leaves(adapter_dir) == 1 and LowerLayers.below_adapter(adapter_dir).first == 1
    everywhere = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    everywhere.save_pretrained(tmp_path / "everywhere")
    assert layers_the_adapter_leaves(tmp_path / "everywhere") == 0 and LowerLayers.below_adapter(tmp_path / "everywhere") is None


def test_the_tuned_model_starts_at_the_adapter_s_layer_from_the_base_s_pass_and_scores_and_answers_as_computed_whole(base_and_adapter):
    from transformers import AutoTokenizer

    base_dir, adapter_dir = base_and_adapter
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pairs, prompts, schemas = _pairs_and_prompts(tokenizer)
    whole = TorchBackend("tuned, whole", evaluation_model(base_dir, adapter_dir), tokenizer, batch_size=3, generation_batch_size=4)
    expected_scores = whole.answer_logps(pairs)
    expected_answers = whole.generate(prompts, 30, schemas)
    assert len(set(expected_answers)) > 1  # the answers read their prompts

    lower = LowerLayers.below_adapter(adapter_dir)
    base = TorchBackend("base", evaluation_model(base_dir), tokenizer, batch_size=3, lower_layers=lower)
    base_scores = base.answer_logps(pairs)
    lower.serve(base.prompt_key_values)
    tuned_model = evaluation_model(base_dir, adapter_dir)
    rows_through_layer_zero = _layer_zero_row_counts(tuned_model)
    tuned = TorchBackend("tuned", tuned_model, tokenizer, batch_size=3, generation_batch_size=4, lower_layers=lower)
    scores = tuned.answer_logps(pairs)
    assert torch.allclose(torch.tensor(scores), torch.tensor(expected_scores), atol=1e-5)
    assert not torch.allclose(torch.tensor(base_scores), torch.tensor(expected_scores), atol=1e-3)  # the adapter matters
    assert rows_through_layer_zero and max(rows_through_layer_zero) == 1  # prefixes only: no batch's rows ran there
    assert tuned.prompt_key_values.covers(prompts)  # the kept prompts: lower layers from the base's, upper its own
    assert tuned.generate(prompts, 30, schemas) == expected_answers


def test_a_model_whose_lower_layers_are_not_the_base_s_is_served_nothing(base_and_adapter):
    from transformers import AutoTokenizer

    base_dir, adapter_dir = base_and_adapter
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pairs, _prompts, _schemas = _pairs_and_prompts(tokenizer)
    lower = LowerLayers.below_adapter(adapter_dir)
    base = TorchBackend("base", evaluation_model(base_dir), tokenizer, batch_size=3, lower_layers=lower)
    base.answer_logps(pairs)
    lower.serve(base.prompt_key_values)
    other = evaluation_model(base_dir, adapter_dir)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    expected = TorchBackend("other, whole", other, tokenizer, batch_size=3).answer_logps(pairs)
    rows_through_layer_zero = _layer_zero_row_counts(other)
    scores = TorchBackend("other", other, tokenizer, batch_size=3, lower_layers=lower).answer_logps(pairs)
    assert torch.allclose(torch.tensor(scores), torch.tensor(expected), atol=1e-5)
    assert max(rows_through_layer_zero) > 1  # the batches' rows ran layer 0 themselves
