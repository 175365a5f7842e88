"""How long and how hard to train, chosen from the dataset size and the model: steps, batch, learning rate.

A LoRA fine-tune on 50-150 pictures needs enough optimizer steps to change anything: with a fixed
3 epochs and an effective batch of 16, 64 training samples give 12 steps, and the adapter learns
nothing. So `epochs`, `batch_size`, `grad_accumulation` and `learning_rate` default to "auto":

- effective batch: 4 below 200 training samples, 8 below 1000, else 16 (more, smaller steps on small data);
- epochs: enough passes for the preset's minimum number of optimizer steps, between 1 and 30;
- learning rate: the model's recipe, else 2e-4 for models under 4 B parameters and 1e-4 above
  (the LoRA rates of Unsloth's vision notebooks, 2e-4, and LLaMA-Factory's Qwen2-VL LoRA
  example, 1e-4; PEFT's docs put LoRA at 1e-4 to 3e-4), warmup then cosine decay.

A model can carry its own recipe: `vlmchat_recipe.json` beside its weights (keys as in
[finetune], plus `min_steps`), as Unsloth Studio ships per-model defaults. The embedded demo model
has one (a 1 M-parameter model wants a 5x higher rate). Values given explicitly (flags, the form,
settings.toml) always win, and every choice comes with its reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

RECIPE_FILE = "vlmchat_recipe.json"
MAX_EPOCHS = 30
AUTO_BATCH_SIZE = 4  # samples per forward pass when batch_size is auto (the effective batch grows by accumulation)
# Below this many sample passes (steps x effective batch) an adapter rarely changes the answers.
LOW_TRAINING = 100

# Presets: named sets of values shown in the form; the rest stays at its [finetune] default.
PRESETS: dict[str, dict] = {
    "quick": {"min_steps": 60, "r": 8, "lora_alpha": 32},  # alpha 16 left 60 steps worse than base (demo, 60 pictures)
    "balanced": {"min_steps": 150, "r": 8, "lora_alpha": 32},
    "thorough": {"min_steps": 400, "r": 16, "lora_alpha": 32},
}
PRESET_HELP = {
    "quick": "a first look: ~60 optimizer steps, rank 8",
    "balanced": "the default: ~150 optimizer steps, rank 8",
    "thorough": "~400 optimizer steps, rank 16: slower, for when balanced is not enough",
}


@dataclass(frozen=True)
class Schedule:
    """The resolved training length and rate, and why each value was chosen."""

    epochs: int
    batch_size: int
    grad_accumulation: int
    learning_rate: float
    steps: int
    train_samples: int
    reasons: dict = field(default_factory=dict)
    warning: str = ""

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accumulation


def read_recipe(model_folder: str | Path | None) -> dict:
    """The model's own recipe (vlmchat_recipe.json beside its weights), or {} when it has none."""
    if not model_folder:
        return {}
    path = Path(model_folder) / RECIPE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def plan_schedule(values: dict, train_samples: int, *, size_b: float | None = None, recipe: dict | None = None,
                  preset: str = "balanced", processes: int = 1, max_steps: int = 0) -> Schedule:
    """Resolve the "auto" values of epochs, batch_size, grad_accumulation and learning_rate, with reasons."""
    recipe = recipe or {}
    reasons: dict[str, str] = {}
    n = max(1, train_samples)
    min_steps = PRESETS.get(preset, PRESETS["balanced"])["min_steps"]

    batch, accum = _given(values, "batch_size"), _given(values, "grad_accumulation")
    target = 4 if n < 200 else 8 if n < 1000 else 16
    if not batch:
        batch = int(recipe.get("batch_size") or min(AUTO_BATCH_SIZE, target))
        reasons["batch_size"] = f"{batch} ({'the model recipe' if recipe.get('batch_size') else 'auto'})"
    if not accum:
        accum = int(recipe.get("grad_accumulation") or max(1, target // (batch * processes)))
        reasons["grad_accumulation"] = (f"{accum}: effective batch {batch * accum * processes} for {n} training "
                                        f"samples ({'the model recipe' if recipe.get('grad_accumulation') else 'auto'})")
    per_step = batch * accum * processes

    epochs = _given(values, "epochs")
    if max_steps:  # the run takes max_steps steps whatever the epochs: the epochs are what those steps cover
        epochs = math.ceil(max_steps * per_step / n)
        reasons["epochs"] = f"max_steps = {max_steps} given, so training stops there"
    elif not epochs:
        epochs = min(MAX_EPOCHS, max(1, math.ceil(min_steps * per_step / n)))
        reasons["epochs"] = (f"{epochs}: {n} training sample{'s' if n != 1 else ''} at {per_step} a step make "
                             f"{n / per_step:.3g} steps an epoch; the {preset} preset wants at least {min_steps} "
                             "optimizer steps"
                             + (f" (capped at {MAX_EPOCHS} epochs)" if epochs == MAX_EPOCHS else ""))
    steps = max_steps or steps_for(epochs, n, per_step)

    rate = float(_given(values, "learning_rate"))
    if not rate:
        if recipe.get("learning_rate"):
            rate = float(recipe["learning_rate"])
            reasons["learning_rate"] = f"{rate:g}: the model's own recipe ({RECIPE_FILE})"
        else:
            rate = 2e-4 if size_b is None or size_b < 4 else 1e-4
            size = "unknown size" if size_b is None else f"{size_b:.1f} B parameters"
            reasons["learning_rate"] = f"{rate:g}: LoRA default for a model of {size} (warmup, then cosine decay)"
    # the last step of a run by epochs takes what is left of its last epoch
    passes = steps * per_step if max_steps else min(steps * per_step, epochs * n)
    warning = ""
    if passes < LOW_TRAINING or steps < 20:
        warning = (f"Only {steps} optimizer steps ({passes} sample passes): probably too little training to change "
                   "the answers. Raise epochs, use the 'thorough' preset, or add data.")
    return Schedule(epochs, batch, accum, rate, steps, n, reasons, warning)


def steps_for(epochs: int, samples: int, per_step: int) -> int:
    """Optimizer steps for `epochs` passes over `samples` at `per_step` samples a step (at least 1)."""
    return max(1, -(-epochs * samples // per_step))


def _given(values: dict, key: str):
    """The value given for `key`, or 0 when it is left to vlmchat ("auto", 0 or missing)."""
    value = values.get(key)
    return 0 if value in (None, "auto", 0) else value


@dataclass(frozen=True)
class SampleCost:
    """What one training sample costs in floating-point operations, and from what it was counted."""

    flops: float
    how: str


TEXT_TOKENS = 40  # a prompt and a short answer beside the picture (and the template's tokens, where uncounted)
TOKENS_PER_SAMPLE = 400  # an image and a short answer, where a sample's tokens are not counted (the plan's memory)
CPU_FLOPS_PER_CORE = 50e9  # float32 LoRA steps on this project's CPU: 85-113 GFLOP/s on 2 cores (RESULTS.md)
GPU_FLOPS = 40e12  # ~40 % of a 100 TFLOP/s bf16 peak


def sample_cost(size, picture_tokens: int | None = None, vision_per_token: int = 1,
                checkpointing: bool = False, detail: str = "", tokens: int | None = None,
                pictures: float = 1.0) -> SampleCost | None:
    """FLOPs of one sample: the language model 4 per parameter and token (forward, and backward to the
    activations: its weights are frozen; 6 when checkpointing recomputes the forward), the vision tower 2 per
    parameter and position (forward only: LoRA on the language model sends no gradient into it).

    `picture_tokens`: image tokens one picture becomes at the run's image detail (None: unknown,
    TOKENS_PER_SAMPLE are counted for the whole model); `vision_per_token`: vision positions behind one image token;
    `detail`: the image detail they were counted at (for the explanation); `tokens`: all of a sample's tokens
    where counted (a sample's mean, `plan._count`), else the picture's + TEXT_TOKENS; `pictures`: a sample's, on average.
    Measured on SmolVLM-256M/-500M and Qwen2-VL-2B at low and high detail: within 15%.
    """
    if size is None or not size.total_b:
        return None
    language = (6 if checkpointing else 4) * size.language_b * 1e9
    if picture_tokens is None:
        return SampleCost((language + 2 * size.vision_b * 1e9) * TOKENS_PER_SAMPLE,
                          f"rough: ~{TOKENS_PER_SAMPLE} tokens per sample, 4 FLOPs per language-model parameter "
                          "per token")
    tokens = tokens or picture_tokens + TEXT_TOKENS
    vision = 2 * size.vision_b * 1e9 * picture_tokens * vision_per_token * pictures
    at = f" at {detail} image detail" if detail else ""
    return SampleCost(language * tokens + vision,
                      f"counted: {picture_tokens} image tokens a picture{at}, ~{tokens} tokens per sample")


def estimate_minutes(schedule: Schedule, cost: SampleCost | None, recipe: dict, on_gpu: bool,
                     cores: int = 1) -> tuple[float | None, str]:
    """(minutes, how it was estimated): the recipe's measured seconds per sample, else the samples' FLOPs at
    the speed of a GPU or of `cores` CPU cores. A rough figure: the ETA while training is measured."""
    passes = schedule.steps * schedule.effective_batch
    key = "seconds_per_sample_gpu" if on_gpu else "seconds_per_sample_cpu"
    if recipe.get(key):
        return passes * float(recipe[key]) / 60, f"measured {recipe[key]} s per sample ({RECIPE_FILE})"
    if cost is None:
        return None, "unknown model size"
    speed = GPU_FLOPS if on_gpu else CPU_FLOPS_PER_CORE * max(1, cores)
    return cost.flops * passes / speed / 60, cost.how
