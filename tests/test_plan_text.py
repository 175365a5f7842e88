"""The Fine-tune tab's plan line says numbers that add up (a blind tester read '23 optimizer steps (30 epochs x 1
steps, effective batch 4)' and '92 sample passes' for 3 training samples, 30 epochs: the run draws its batches
across epochs, so 30 x 3 / 4 = 22.5 -> 23 steps and 90 sample passes)."""

from __future__ import annotations

import math
import re

import pytest

from vlmchat.finetune.recipe import plan_schedule
from vlmchat.ui.finetune_tab import _plan_markdown


@pytest.mark.parametrize("train, val", [(3, 1), (1, 0), (57, 7), (300, 40)])
def test_the_plan_line_adds_up_and_counts_in_words(train, val):
    schedule = plan_schedule({}, train, size_b=0.5, recipe={}, preset="balanced")
    plan = {"train_samples": train, "val_samples": val, "steps": schedule.steps, "epochs": schedule.epochs,
            "effective_batch": schedule.effective_batch, "learning_rate": schedule.learning_rate, "minutes": 1.0,
            "minutes_how": "estimated", "peak_gib": 1.0, "longest_sample_tokens": 100, "evaluate_needs": 6}
    text = _plan_markdown(plan)
    said = re.search(r"(\d+) optimizer steps? \((\d+) epochs? of (\d+) samples?, effective batch (\d+)\)", text)
    assert said, text
    steps, epochs, samples, batch = map(int, said.groups())
    assert (steps, epochs, samples) == (schedule.steps, schedule.epochs, train)
    assert steps == math.ceil(epochs * samples / batch)  # what the run does (recipe.steps_for)
    assert not re.search(r"\b1 (steps|samples|validation samples|epochs)\b", text), text
    if schedule.warning:
        passes = int(re.search(r"\((\d+) sample passes\)", schedule.warning).group(1))
        assert passes == min(steps * batch, epochs * samples)
    assert not re.search(r"\b1 training samples\b", schedule.reasons.get("epochs", "")), schedule.reasons


@pytest.mark.parametrize("given, max_steps", [({}, 23), ({"epochs": 1}, 100)])
def test_with_max_steps_the_plan_says_what_those_steps_cover(given, max_steps):
    """The run takes max_steps steps whatever the epochs (loop.py): 23 steps of 4 over 3 samples are 92 sample
    passes, ~31 epochs (it said 23 epochs, 69 passes); epochs=1 with 100 steps said '3 sample passes' (reviewer)."""
    schedule = plan_schedule(given, 3, size_b=0.5, recipe={}, preset="balanced", max_steps=max_steps)
    assert schedule.steps == max_steps
    assert schedule.epochs == math.ceil(max_steps * schedule.effective_batch / 3)
    if schedule.warning:
        assert f"({max_steps * schedule.effective_batch} sample passes)" in schedule.warning
