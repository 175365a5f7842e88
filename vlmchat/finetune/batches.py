"""Which samples go into which micro-batch, on which process, and their encoding (cached when small).

The order is a seeded permutation per epoch laid end to end, so optimizer step `s` always reads the
same samples: resuming from a checkpoint at step `s` continues exactly where the run stopped, and
with N processes (accelerate launch) each one takes its own slice of every global batch.
"""

from __future__ import annotations

import random

from ..images import fit_picture, load_image
from .collate import collate_groups, encode_example
from .recipe import steps_for

CACHE_BUDGET_BYTES = 2 * 2**30  # keep encoded samples in memory when the whole split fits in this


class EncodedSamples:
    """Samples encoded on first use; a sample that cannot be encoded (too long) is skipped and counted."""

    def __init__(self, samples, processor, max_length: int, detail=None):
        """`detail`: the run's `families.DetailChoice` (None: the processor's own defaults, i.e. high)."""
        self.samples, self.processor, self.max_length, self.detail = samples, processor, max_length, detail
        self.cache: dict[int, dict] = {}
        self.cacheable: bool | None = None
        self.skipped: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int) -> dict | None:
        if index in self.cache:
            return self.cache[index]
        if index in self.skipped:
            return None
        sample = self.samples[index]
        try:
            images = [load_image(path) for path in sample.images]
            if self.detail:
                images = [fit_picture(image, self.detail.max_edge, self.detail.short_side) for image in images]
            example = encode_example(self.processor, images, sample.messages, self.max_length,
                                     self.detail.processor_kwargs if self.detail else None)
        except (ValueError, TypeError) as exc:
            self.skipped[index] = f"{sample.source}: {exc}"
            return None
        if self.cacheable is None:
            size = sum(t.numel() * t.element_size() for t in example.values())
            self.cacheable = size * len(self.samples) <= CACHE_BUDGET_BYTES
        if self.cacheable:
            self.cache[index] = example
        return example


class BatchPlan:
    """Maps (step, micro-batch, process) to sample indices of the training split."""

    def __init__(self, size: int, batch_size: int, grad_accumulation: int, world: int, seed: int):
        self.size, self.batch_size, self.accum, self.world, self.seed = size, batch_size, grad_accumulation, world, seed
        self._orders: dict[int, list[int]] = {}

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.accum * self.world

    def steps_for(self, epochs: int) -> int:
        """Optimizer steps for `epochs` passes over the split (at least 1); the plan before Start counts the same."""
        return steps_for(epochs, self.size, self.samples_per_step)

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(self.size))
            random.Random(self.seed * 100003 + epoch).shuffle(order)
            self._orders = {e: o for e, o in self._orders.items() if abs(e - epoch) <= 1}  # a step may span two
            self._orders[epoch] = order
        return self._orders[epoch]

    def indices(self, step: int, micro: int, rank: int) -> list[int]:
        start = ((step * self.accum + micro) * self.world + rank) * self.batch_size
        return [self._order(p // self.size)[p % self.size] for p in range(start, start + self.batch_size)]

    def epoch_at(self, step: int) -> float:
        return step * self.samples_per_step / self.size


def micro_batch(data: EncodedSamples, indices: list[int], pad_id: int) -> list[dict]:
    """The collated batch for `indices` (`collate_groups`: one per kind of sample, pictures or none); a skipped
    sample is replaced by the next usable one."""
    examples = []
    for index in indices:
        for offset in range(len(data)):
            example = data.get((index + offset) % len(data))
            if example is not None:
                examples.append(example)
                break
    if not examples:
        raise ValueError("no sample of the dataset could be encoded: "
                         + "; ".join(list(data.skipped.values())[:3]))
    return collate_groups(examples, pad_id)
