"""Checks an export must pass before anything is registered.

1. llama.cpp agrees with PyTorch: the f16 GGUF and the merged model predict the same next token at (almost) every
   position of a few task prompts.
2. The Modelfile TEMPLATE renders a task prompt exactly as the tokenizer's chat template does.
3. The quantized GGUF answers a task prompt, decoded under the prompt's answer schema as serving asks Ollama to
   (llama.cpp's JSON-schema grammar), with a complete pick rl/core/prompts.py parses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl.core.prompts import Catalog, PickParseError, parse_pick
from rl.export.modelfile import ChatFormat, template_parity

MIN_ARGMAX_AGREEMENT = 0.95


class VerificationFailed(RuntimeError):
    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass
class VerificationReport:
    argmax_agreement: float | None = None
    positions_compared: int = 0
    template_parity: bool | None = None
    template_diff: str = ""
    pick_answer: str = ""
    pick_parsed: bool | None = None
    pick_error: str = ""
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def argmax_agreement(model: Any, gguf_path: str | Path, sequences: list[list[int]]) -> tuple[float, int]:
    """The share of positions where llama.cpp's and PyTorch's most likely next token agree."""
    import numpy as np
    import torch
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), n_ctx=max(len(s) for s in sequences) + 8, logits_all=True, verbose=False, seed=0)
    agree = total = 0
    try:
        model.eval()
        for sequence in sequences:
            with torch.no_grad():
                torch_top = model(torch.tensor([sequence])).logits[0].argmax(-1).numpy()
            llm.reset()
            llm.eval(sequence)
            gguf_top = np.asarray(llm.scores[: len(sequence)]).argmax(-1)
            agree += int((torch_top == gguf_top).sum())
            total += len(sequence)
    finally:
        llm.close()
    return agree / total, total


def verify_export(
    *, merged_model: Any, tokenizer: Any, f16_gguf: Path, quantized_gguf: Path, fmt: ChatFormat,
    prompts: list[list[dict]], catalog: Catalog, schemas: list[dict[str, Any]] | None = None, check_pick: bool = True,
) -> VerificationReport:
    """Run the three checks; raises VerificationFailed (with the report) naming every check that failed."""
    from rl.evaluation.backends import LlamaCppBackend
    from rl.evaluation.evalset import tokenize_prompt

    report = VerificationReport()
    sequences = [tokenize_prompt(tokenizer, p) for p in prompts]
    report.argmax_agreement, report.positions_compared = argmax_agreement(merged_model, f16_gguf, sequences)
    if report.argmax_agreement < MIN_ARGMAX_AGREEMENT:
        report.failures.append(
            f"llama.cpp and PyTorch agree on the next token at only {report.argmax_agreement:.1%} of positions "
            f"(need {MIN_ARGMAX_AGREEMENT:.0%}): the GGUF conversion is wrong"
        )
    ok, rendered, expected = template_parity(tokenizer, fmt, prompts[0])
    report.template_parity = ok
    if not ok:
        report.template_diff = f"template: {rendered[:300]!r} / chat template: {expected[:300]!r}"
        report.failures.append("the Modelfile TEMPLATE does not render prompts as the tokenizer's chat template does")
    if check_pick:
        backend = LlamaCppBackend("verify", str(quantized_gguf), tokenizer)
        try:
            report.pick_answer = backend.generate([tuple(sequences[0])], max_new_tokens=96, schemas=schemas[:1] if schemas else None)[0]
        finally:
            backend.llm.close()
        try:
            parse_pick(report.pick_answer, catalog)
            report.pick_parsed = True
        except PickParseError as error:
            report.pick_parsed = False
            report.pick_error = str(error)
            report.failures.append(f"the quantized model's answer is not a usable pick ({error.reason}): {report.pick_answer[:120]!r}")
    if report.failures:
        raise VerificationFailed("Export verification failed: " + "; ".join(report.failures), report.as_dict())
    return report
