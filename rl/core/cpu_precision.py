"""Whether bfloat16 beats fp32 on this CPU, measured once per process rather than guessed from CPU flags.

The flags mislead both ways: an AMD EPYC with AVX512-BF16 but no AMX runs a bf16 matmul about 3x faster than an fp32
one (383 against 123 GFLOP/s on 2 cores), while an Intel Xeon whose oneDNN is capped at AVX512_CORE_BF16 measured
bf16 autocast training slower than fp32 (docs/training-speed.md, "Which precision on which CPU"). So the choice times
what training and evaluation run most: a linear map of a small model's MLP shape, fp32 weights against bf16 weights
with the input cast by autocast (as training under autocast over frozen bf16 linears runs it), on this process's
threads and oneDNN settings.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# bf16 rounds; it has to win clearly, not by noise, to be worth it.
MIN_BF16_SPEEDUP = 1.25
_TOKENS, _HIDDEN, _INTERMEDIATE = 2048, 576, 1536  # a batch of SmolLM2-135M's MLP up-projection
_REPEATS = 5


@dataclass(frozen=True)
class PrecisionTiming:
    fp32_seconds: float
    bf16_seconds: float

    @property
    def bf16_speedup(self) -> float:
        return self.fp32_seconds / self.bf16_seconds

    @property
    def bf16_is_faster(self) -> bool:
        return self.bf16_speedup >= MIN_BF16_SPEEDUP

    def describe(self) -> str:
        return (f"a {_TOKENS}x{_HIDDEN}->{_INTERMEDIATE} linear map took {self.fp32_seconds * 1e3:.1f} ms in fp32 and "
                f"{self.bf16_seconds * 1e3:.1f} ms in bf16 ({self.bf16_speedup:.2f}x)")


def _best_seconds(run, repeats: int = _REPEATS) -> float:
    run()  # oneDNN builds its kernel for the shape on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def time_linear_precisions() -> PrecisionTiming:
    import torch

    generator = torch.Generator().manual_seed(0)
    activations = torch.randn(_TOKENS, _HIDDEN, generator=generator)
    weight = torch.randn(_INTERMEDIATE, _HIDDEN, generator=generator)
    weight_bf16 = weight.to(torch.bfloat16)

    def fp32() -> None:
        torch.nn.functional.linear(activations, weight)

    def bf16() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(activations, weight_bf16)

    with torch.no_grad():
        return PrecisionTiming(_best_seconds(fp32), _best_seconds(bf16))


@functools.cache
def measured_cpu_precision() -> PrecisionTiming:
    """This CPU's fp32 and bf16 timings, measured once per process (about half a second)."""
    timing = time_linear_precisions()
    logger.debug("CPU precision: %s.", timing.describe())
    return timing


def cpu_bf16_is_faster() -> bool:
    """Whether bf16 (autocast in training, bf16 weights in evaluation) beats fp32 on this CPU by at least
    `MIN_BF16_SPEEDUP`. Training logs the measurement; evaluation records its choice as `data.precision`."""
    return measured_cpu_precision().bf16_is_faster
