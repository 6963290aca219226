"""`train_dpo --dry-run`: the dataset a run would train on, described (and dumped as JSONL on request); trains nothing."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rl.core.config import TrainingConfig
from rl.data.dataset_builder import PreparedDataset, build_dataset


def pairs_longer_than(dataset: Any, tokenizer: Any, max_length: int) -> int:
    """How many pairs' prompt + chosen + rejected exceed `max_length` tokens (the trainer drops them)."""
    too_long = 0
    for row in dataset:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        answers = sum(len(tokenizer(row[side][0]["content"], add_special_tokens=False)["input_ids"]) + 2 for side in ("chosen", "rejected"))
        too_long += len(prompt) + answers > max_length
    return too_long


def dump_dataset(prepared: PreparedDataset, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in prepared.dataset.items():
        path = folder / f"dpo_{split}.jsonl"
        rows.to_json(str(path), lines=True, force_ascii=False)
        written.append(path)
    if prepared.kto_dataset is not None:
        for split, rows in prepared.kto_dataset.items():
            path = folder / f"kto_{split}.jsonl"
            rows.to_json(str(path), lines=True, force_ascii=False)
            written.append(path)
    (folder / "stats.json").write_text(json.dumps(prepared.stats.to_dict(), indent=1, default=str))
    return written


def dry_run(config: TrainingConfig, data: dict[str, Any], dump_dir: str | None = None) -> list[tuple[str, str]]:
    """Build the dataset as a run would and describe it; trains nothing and writes nothing but the optional dump."""
    from rl.core.base_model import load_tokenizer

    tokenizer = load_tokenizer(config.base_model or None)
    prepared = build_dataset(config, data, tokenizer, for_training=True)
    report = prepared.stats.table()
    report.append((f"train pairs longer than max_length {config.max_length}", str(pairs_longer_than(prepared.dataset["train"], tokenizer, config.max_length))))
    if dump_dir:
        report.append(("dataset written to", ", ".join(str(p) for p in dump_dataset(prepared, dump_dir))))
    return report
