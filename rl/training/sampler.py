"""Batches that keep a scenario's pairs together, so a batch holds few prompts to share (also over several processes)."""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any


def rows_by_group(group_keys: list[Any]) -> dict[Any, list[int]]:
    """Row indices per group key, in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for index, key in enumerate(group_keys):
        groups.setdefault(key, []).append(index)
    return groups


def prompt_sorted_order(prompt_ids: list[list[int]]) -> list[int]:
    """Row indices ordered by prompt (rows of one prompt keep their order), so sequential passes batch shared prompts."""
    return sorted(range(len(prompt_ids)), key=lambda i: (tuple(prompt_ids[i]), i))


def prompt_key(prompt_ids: list[int]) -> int:
    """The key that groups rows of one prompt."""
    return hash(tuple(prompt_ids))


def first_epoch_order(prompt_ids: list[list[int]], batch_size: int, seed: int, row_labels: list[Any] | None = None) -> list[int]:
    """The rows in the order the first epoch's batches draw them, as indices of the rows given in their original order:
    what `PromptGroupedBatchSampler` draws over the rows once sorted by `prompt_sorted_order` (with `row_labels`, one a
    row given, as it draws when it spreads them)."""
    by_prompt = prompt_sorted_order(prompt_ids)
    batches = PromptGroupedBatchSampler([prompt_key(prompt_ids[i]) for i in by_prompt], batch_size, seed,
                                        row_labels=[row_labels[i] for i in by_prompt] if row_labels is not None else None)
    return [by_prompt[k] for batch in batches for k in batch]


class PromptGroupedBatchSampler:
    """Batches of rows that share prompts: groups of rows with one prompt are shuffled (rows within a group too) and cut
    into batches of `batch_size`, so a batch holds few prompts.

    Under several processes, accelerate's `BatchSamplerShard` deals these batches round-robin (batch i to process
    i mod n). The number of batches is made a multiple of `num_processes` by spreading the rows evenly over one more
    round of batches (each at most `batch_size`), so every process gets as many batches as the others and every row
    is in exactly one batch per epoch: nothing dropped, nothing repeated to even out the last round.

    The epoch that seeds the order comes from `epoch_of()` when given (the trainer's state, right even when a resumed
    run skips into the middle of an epoch, where `set_epoch` does not reach this sampler), else from `set_epoch`.

    When `row_weights_of()` gives weights (one a row; confusion-weighted sampling), an epoch draws each group about in
    proportion to its rows' mean weight (`proportional_draw`) instead of once each, cut into as many batches as always.
    With `row_labels` (one a row, a group's first row's label standing for it), the groups of each label are spread
    evenly over the epoch (`spread_by_label`) instead of shuffled together, so every stretch of batches holds the
    labels in about their shares.
    """

    def __init__(self, group_keys: list[Any], batch_size: int, seed: int, num_processes: int = 1,
                 epoch_of: Callable[[], int] | None = None, row_weights_of: Callable[[], list[float] | None] | None = None,
                 row_labels: list[Any] | None = None):
        self.groups = rows_by_group(group_keys)
        self.row_weights_of, self.row_labels = row_weights_of, row_labels
        self.n_rows, self.row_batch_size, self.seed, self.num_processes = len(group_keys), batch_size, seed, num_processes
        if self.n_rows < num_processes:
            raise ValueError(f"{self.n_rows} training pairs cannot be shared by {num_processes} processes: each needs at least one.")
        self.epoch_of = epoch_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batch_count(self) -> int:
        per_round = math.ceil(math.ceil(self.n_rows / self.row_batch_size) / self.num_processes) * self.num_processes
        # With tiny data and batches, a round of one row per process can need more rows than there are: then fewer,
        # larger batches.
        return per_round if per_round <= self.n_rows else self.n_rows // self.num_processes * self.num_processes

    def __len__(self) -> int:
        return self._batch_count()

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        rng = random.Random(self.seed + epoch)
        groups = [rng.sample(rows, len(rows)) for rows in self.groups.values()]
        row_weights = self.row_weights_of() if self.row_weights_of is not None else None
        if row_weights is not None:
            groups = [groups[i] for i in proportional_draw([sum(row_weights[k] for k in rows) / len(rows) for rows in groups], rng)]
        if self.row_labels is not None:
            groups = spread_by_label(groups, [self.row_labels[group[0]] for group in groups], rng)
        else:
            rng.shuffle(groups)
        order = [index for group in groups for index in group]
        count = self._batch_count()
        if row_weights is not None:
            bounds = [round(i * len(order) / count) for i in range(count + 1)]
        elif count == math.ceil(self.n_rows / self.row_batch_size):
            bounds = [min(i * self.row_batch_size, self.n_rows) for i in range(count + 1)]
        else:
            bounds = [round(i * self.n_rows / count) for i in range(count + 1)]
        return iter([order[bounds[i] : bounds[i + 1]] for i in range(count)])


def proportional_draw(weights: list[float], rng: random.Random) -> list[int]:
    """As many draws as there are weights, each index drawn about weight / mean weight times (the floor or the ceiling
    of it: systematic sampling, one random offset, so no index strays further from its share)."""
    total = sum(weights)
    if not weights or total <= 0:
        return list(range(len(weights)))
    step, point, drawn, reached = total / len(weights), rng.random() * total / len(weights), [], 0.0
    for index, weight in enumerate(weights):
        reached += weight
        while point < reached and len(drawn) < len(weights):
            drawn.append(index)
            point += step
    return drawn


def spread_by_label(items: list[Any], labels: list[Any], rng: random.Random) -> list[Any]:
    """The items in an order that spreads each label's evenly: a label's k-th of n (in a random order) goes at about
    (k + u) / n of the way, u drawn per item, so any stretch of the order holds each label in about its share."""
    placed = []
    for indices in rows_by_group(labels).values():
        rng.shuffle(indices)
        placed += [((k + rng.random()) / len(indices), index) for k, index in enumerate(indices)]
    return [items[index] for _, index in sorted(placed)]


def rows_the_steps_reach(group_keys: list[Any], max_steps: int, rows_per_step: int, seed: int) -> list[int] | None:
    """With `max_steps` ending training before one pass over the rows, the rows those steps can draw: whole groups
    (a scenario's pairs stay together, as the batches keep them) in a seeded random order, until there are enough for
    every step. None when the steps reach every row anyway. Only these rows need reference log-probs."""
    needed = max_steps * rows_per_step
    if max_steps <= 0 or len(group_keys) <= needed:
        return None
    order = list(rows_by_group(group_keys).values())
    random.Random(seed).shuffle(order)
    chosen: list[int] = []
    for rows in order:
        if len(chosen) >= needed:
            break
        chosen += rows
    return sorted(chosen)
