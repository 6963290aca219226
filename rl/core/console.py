"""What long work prints: progress bars on a terminal, a line per phase (or every few steps) in a log file, and none
of the third-party noise a person cannot act on.

`on_terminal()` decides between the two; `quiet_third_party()` (called when the `rl` app is ready, before torch,
transformers, datasets or bitsandbytes are imported) turns off the Hugging Face libraries' own progress bars when the
output is not a terminal (tqdm writes a new line per update then) and silences, at their source, the known warnings
that come from inside third-party code.
"""
from __future__ import annotations

import os
import sys
import warnings

# FutureWarnings raised inside TRL/PEFT/transformers code, not ours (our calls use the new names); each goes away
# when those libraries move to the new API, so there is nothing for a user to change.
THIRD_PARTY_FUTURE_WARNINGS = (
    # TRL's and PEFT's trainers still call model.is_gradient_checkpointing (transformers 5.2x renamed it).
    r"`is_gradient_checkpointing` is deprecated",
    # TRL's DPOTrainer reads args.gradient_checkpointing; we pass activation_checkpointing.
    r"`gradient_checkpointing` is deprecated",
    # torch's own modules (torch.ao, torch.distributed) still define script methods.
    r"`torch\.jit\.script_method` is deprecated",
)


def on_terminal() -> bool:
    """Whether a person watches the output: progress bars then, log lines otherwise."""
    return sys.stderr.isatty()


def quiet_third_party() -> None:
    for message in THIRD_PARTY_FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
    if not on_terminal():
        # Read when datasets and huggingface_hub (whose setting transformers follows) are imported.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # tqdm's default for bars that third-party code opens without a `disable` argument (transformers' GGUF
        # dequantization, 272 updates on one line of the demo's log); read when tqdm is imported, after this.
        os.environ.setdefault("TQDM_DISABLE", "1")
