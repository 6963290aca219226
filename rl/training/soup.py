"""A soup of runs: the mean of several trained adapters' weight deltas, as one adapter in a run folder of its own.

The preset's adapters of different seeds are nearly orthogonal (the cosine of two seeds' deltas is about 0.1: each
rank-16 adapter moves in the row space its random `A` starts in), so their mean keeps what they share and a third of
the rest: the mean of three seeds picked the widget right for 0.918 of the natural set's gate part where the seeds
averaged 0.859 (docs/training-recipe.md, rounds fifteen and sixteen). The members must be trained as long as one run
of the preset; a mean of shorter ones is no better than one of them. PEFT's `add_weighted_adapter` (`cat`) does the
averaging: the members' `B A` side by side as one adapter of their ranks' sum, each weighted 1/n, which is the mean
of their deltas exactly.

The members must share a base model, adapted modules and a held-out split (`--split-seed`), so the soup's own
held-out split is one none of them trained on; the soup's config.json is its first member's with the members named.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from django.conf import settings

from rl.core.config import TrainingConfig
from rl.core.runs import FINAL_DIR, recorded_base_model, resolve_checkpoint, write_run_config

logger = logging.getLogger(__name__)

SOUP_ADAPTER = "soup"
# What must agree between members: a mean of adapters over different bases or modules means nothing, and members of
# different splits trained on each other's held-out questions.
_SAME_ADAPTER_KEYS = ("base_model_name_or_path", "target_modules", "layers_to_transform")


class SoupError(ValueError):
    """Runs that cannot be averaged into one adapter, or a soup name already taken."""


@dataclass(frozen=True)
class SoupMember:
    name: str
    adapter_dir: Path
    run_config: dict[str, Any]

    @cached_property
    def config(self) -> TrainingConfig:
        return TrainingConfig(**self.run_config["config"])

    @cached_property
    def adapter_config(self) -> dict[str, Any]:
        return json.loads((self.adapter_dir / "adapter_config.json").read_text())

    def split(self) -> tuple[Any, ...]:
        return self.config.held_out_seed, self.config.eval_fraction, json.dumps(self.run_config.get("data", {}), sort_keys=True)


def _comparable(value: Any) -> Any:
    """PEFT writes target_modules as a list in a set's order, which differs from one process to the next."""
    return sorted(value) if isinstance(value, list) else value


def soup_members(checkpoints: list[str]) -> list[SoupMember]:
    """The runs named, checked to be averageable: at least two, distinct, trained runs (with their config.json) over
    one base model, the same adapted modules and the same held-out split."""
    if len(checkpoints) < 2:
        raise SoupError(f"A soup needs at least two runs, got {len(checkpoints)}.")
    members = []
    for checkpoint in checkpoints:
        adapter_dir, run_config = resolve_checkpoint(checkpoint)
        if run_config is None:
            raise SoupError(f"{checkpoint!r} has no run config.json beside its adapter: name a run trained by train_dpo.")
        members.append(SoupMember(run_config.get("run", checkpoint), adapter_dir.resolve(), run_config))
    if len({m.adapter_dir for m in members}) < len(members):
        raise SoupError("A run is named twice: a soup's members are different runs.")
    first = members[0]
    for member in members[1:]:
        if member.config.base_model != first.config.base_model:
            raise SoupError(f"{member.name} was trained on base model {member.config.base_model!r}, {first.name} on "
                            f"{first.config.base_model!r}: a soup's members share their base.")
        for key in _SAME_ADAPTER_KEYS:
            if _comparable(member.adapter_config.get(key)) != _comparable(first.adapter_config.get(key)):
                raise SoupError(f"{member.name}'s adapter has {key} {member.adapter_config.get(key)!r}, {first.name}'s "
                                f"{first.adapter_config.get(key)!r}: a soup's members adapt the same modules of one base.")
        if member.split() != first.split():
            raise SoupError(
                f"{member.name} holds out other questions than {first.name} (split seed {member.config.held_out_seed} "
                f"against {first.config.held_out_seed}, or another eval fraction or data source): each trained on "
                "questions the other holds out, so no held-out split could score their soup. Train the members with "
                "one --split-seed.")
    return members


def soup_run_dir(name: str, output_dir: str | None = None) -> Path:
    from rl.models import TrainingRun

    folder = (Path(output_dir) if output_dir else Path(settings.RL_CHECKPOINT_DIR)) / name
    if folder.exists() or TrainingRun.objects.filter(name=name).exists():
        raise SoupError(f"A run named {name!r} exists already (folder {folder} or a TrainingRun row): pick another --run-name.")
    return folder


def average_adapters(members: list[SoupMember], adapter_dir: Path) -> None:
    """The mean of the members' weight deltas, written as a PEFT adapter (and the first member's tokenizer) to
    `adapter_dir`."""
    import torch
    from peft import PeftModel

    from rl.core.base_model import load_causal_lm

    base = load_causal_lm(members[0].config.base_model or None, dtype=torch.float32)
    names = [f"member{i}" for i in range(len(members))]
    model = PeftModel.from_pretrained(base, str(members[0].adapter_dir), adapter_name=names[0])
    for name, member in zip(names[1:], members[1:]):
        model.load_adapter(str(member.adapter_dir), adapter_name=name)
    model.add_weighted_adapter(names, [1 / len(members)] * len(members), SOUP_ADAPTER, combination_type="cat")
    model.set_adapter(SOUP_ADAPTER)
    for name in names:
        model.delete_adapter(name)
    with tempfile.TemporaryDirectory(dir=adapter_dir.parent) as scratch:
        model.save_pretrained(scratch, selected_adapters=[SOUP_ADAPTER])
        saved = Path(scratch) / SOUP_ADAPTER if (Path(scratch) / SOUP_ADAPTER).is_dir() else Path(scratch)
        shutil.copytree(saved, adapter_dir)
    for item in members[0].adapter_dir.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")) and item.is_file():
            shutil.copy2(item, adapter_dir / item.name)


def make_soup(checkpoints: list[str], name: str, output_dir: str | None = None) -> Any:
    """Average the runs `checkpoints` into a new run `name` (its folder: config.json and final/) and record it as a
    TrainingRun, so evaluate_model, export_model and gate_model take it like any run. Nothing is written when a check
    fails; a failure while averaging leaves no folder behind."""
    from rl.models import TrainingRun

    run_dir = soup_run_dir(name, output_dir)
    members = soup_members(checkpoints)
    logger.info("Soup %s: the mean of %d adapters (%s)", name, len(members), ", ".join(m.name for m in members))
    run_dir.mkdir(parents=True)
    try:
        average_adapters(members, run_dir / FINAL_DIR)
        first = members[0].run_config
        record = {**first, "run": name, "created_at": datetime.now(timezone.utc).isoformat(),
                  "soup": {"members": [m.name for m in members], "adapters": [str(m.adapter_dir) for m in members],
                           "method": "mean of the weight deltas (PEFT add_weighted_adapter, cat)"}}
        write_run_config(run_dir, record)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    member_names = [m.name for m in members]
    watermarks = TrainingRun.objects.filter(name__in=member_names, data_watermark__isnull=False).values_list("data_watermark", flat=True)
    # The algorithm a run trained with is on its row (config.algo may say "auto").
    member_algo = TrainingRun.objects.filter(name=members[0].name).values_list("algo", flat=True).first() or members[0].config.algo
    logger.info("Soup %s written to %s", name, run_dir / FINAL_DIR)
    return TrainingRun.objects.create(
        name=name, status=TrainingRun.Status.SUCCEEDED, preset=first.get("preset", ""), algo=member_algo,
        base_model=recorded_base_model(members[0].config.base_model), config=first["config"],
        data_source={**first.get("data", {}), "stats": first.get("dataset_stats", {}), "soup_of": member_names},
        data_watermark=max(watermarks, default=None),
        metrics={"soup_of": member_names}, run_dir=str(run_dir), adapter_dir=str(run_dir / FINAL_DIR),
        finished_at=datetime.now(timezone.utc),
    )
