"""What a fine-tune will do before it starts: samples, steps, epochs, learning rate, time and peak memory.

The same functions the child process uses (`resolve_schedule`, the dataset split), so the plan the
Fine-tune tab shows before Start is the schedule the run follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .datasets import picture_size, read_dataset, split
from .job import min_eval_samples, model_size, resolve_schedule, usable_cores
from ..models.conversation import ONE_PICTURE_KEY
from .recipe import RECIPE_FILE, TOKENS_PER_SAMPLE, estimate_minutes, read_recipe, sample_cost
from .setup import cpu_checkpointing, peak_gib
from .spec import JobSpec


def plan_run(spec: JobSpec, on_gpu: bool | None = None, cores: int | None = None,
             free_gib: float | None = None) -> dict:
    """The plan of `spec` on this machine as a JSON-ready dict (the Fine-tune tab and the finetune_plan endpoint).

    `cores`: CPU cores the run gets; default all but one, which a run started from the UI leaves to it (setup.py).
    `free_gib`: RAM available to a CPU run (default: what is available now)."""
    report = read_dataset(spec.data, spec.caption_prompt)  # as the run reads it: a broken picture is no sample
    samples = report.require_usable(skip_invalid=True)
    train, val = split(samples, spec.train_fraction, spec.seed)
    size = model_size(spec)
    schedule = resolve_schedule(spec, len(train), size, spec.num_processes)
    if on_gpu is None:
        on_gpu = _gpu_visible() and spec.device != "cpu"
    source = spec.model_source or spec.model
    recipe = read_recipe(source if Path(source).is_dir() else None)
    count = _count(spec, samples, on_gpu)
    tokens = count.longest
    if free_gib is None and not on_gpu:
        free_gib = ram_per_process(spec.num_processes)
    # on the CPU `auto` is decided as the run decides it; on a GPU the plan counts what the settings say
    checkpointing = (cpu_checkpointing(spec.gradient_checkpointing, size, tokens, schedule.batch_size, free_gib)[0]
                     if not on_gpu else spec.gradient_checkpointing == "on")
    cost = sample_cost(size, count.picture, count.per_token, checkpointing=checkpointing, detail=count.detail,
                       tokens=round(count.mean), pictures=count.pictures)
    minutes, how = estimate_minutes(schedule, cost, recipe, on_gpu, cores=cores or max(1, usable_cores() - 1))
    peak = peak_gib(size, on_gpu=on_gpu, tokens=tokens, batch_size=schedule.batch_size, checkpointing=checkpointing)
    warnings = [schedule.warning, _too_long(spec, count, len(samples))]
    if not on_gpu and peak is not None:
        warnings.append(_short_of_ram(size, tokens, schedule.batch_size, peak, checkpointing, count.detail, free_gib))
    several = sum(len(sample.images) > 1 for sample in samples)
    if several and recipe.get(ONE_PICTURE_KEY):
        warnings.append(f"{several} sample(s) hold several pictures, but this model reads one picture per chat "
                        f"({RECIPE_FILE}): Chat and Evaluate cannot ask it what those teach, and they may teach it "
                        "to answer one picture with nothing. Give each picture a row of its own.")
    warning = " ".join(w for w in warnings if w)
    needs = min_eval_samples()
    return {"format": report.format, "samples": len(samples), "train_samples": len(train), "val_samples": len(val),
            "problems": len(report.problems), "epochs": schedule.epochs, "steps": schedule.steps,
            "steps_per_epoch": -(-len(train) // (schedule.effective_batch * spec.num_processes)),
            "effective_batch": schedule.effective_batch * spec.num_processes, "batch_size": schedule.batch_size,
            "grad_accumulation": schedule.grad_accumulation, "learning_rate": schedule.learning_rate,
            "minutes": None if minutes is None else round(minutes, 2), "minutes_how": how,
            "peak_gib": None if peak is None else round(peak, 2), "longest_sample_tokens": tokens, "warning": warning,
            "reasons": schedule.reasons, "preset": spec.preset,
            "evaluate_after": bool(spec.evaluate and len(val) >= needs), "evaluate_needs": needs}


def _too_long(spec: JobSpec, count: Count, samples: int) -> str:
    """What to change when samples are longer than max_length ('' when none is)."""
    if not count.too_long:
        return ""
    at = f" at {count.detail} image detail (every picture counted as the dataset's largest)" if count.adjustable else ""
    low = ", or use low image detail" if count.detail == "high" and count.adjustable else ""
    if count.too_long == samples:  # the run would load the model, then fail on its first batch
        return (f"Every sample is longer than max_length {spec.max_length} tokens{at}, so the run would train on "
                f"none: raise max_length (--max-length) to {count.shortest} or more, the shortest sample's "
                f"length{low}.")
    return (f"{count.too_long} sample(s) are longer than max_length {spec.max_length} tokens{at}; the run skips those "
            f"that are: raise max_length{low}.")


def refuse_too_long(spec: JobSpec, samples: list) -> None:
    """InputError, before a job folder is made, when every sample is longer than max_length (counted as the plan
    counts them; nothing when the model's processor is not on this machine). The plan counts every picture as the
    largest; refused only when no sample fits with its pictures counted as the smallest either (the run encodes each
    at its own size: one big scan among small photos made every sample 'too long')."""
    on_gpu = _gpu_visible() and spec.device != "cpu"
    count = _count(spec, samples, on_gpu)
    if count.too_long == len(samples) and _count(spec, samples, on_gpu, min).too_long == len(samples):
        raise InputError(_too_long(spec, count, len(samples)))


def ram_per_process(processes: int) -> float:
    """GiB of RAM available now to each of `processes` CPU training processes (every one holds the model)."""
    from ..models.plan import read_free_memory

    return read_free_memory(gpus=False)["cpu"].free_gib / max(1, processes)


def sample_tokens(spec: JobSpec, samples, on_gpu: bool) -> int:
    """Tokens of the longest of `samples` (at most max_length: a longer one is skipped) as the plan and the run
    size their memory by: at the run's image detail, `_count`; max_length where they cannot be counted."""
    return _count(spec, samples, on_gpu).longest


@dataclass(frozen=True)
class Count:
    """What the plan counts of a dataset's samples at the run's image detail."""

    picture: int | None  # image tokens of one picture (None: the model's processor is not on this machine)
    longest: int  # tokens of the longest sample that fits max_length (max_length when not counted)
    mean: float  # tokens of a sample, on average
    pictures: float  # pictures in a sample, on average
    per_token: int  # vision positions behind an image token
    detail: str  # the detail counted at ("" when not counted)
    too_long: int  # samples over max_length (the run skips them)
    adjustable: bool = False  # the family's pictures take fewer tokens at low detail
    shortest: int = 0  # tokens of the shortest sample (0 when not counted)


def _count(spec: JobSpec, samples, on_gpu: bool, pick=max) -> Count:
    """Every sample's tokens through the model's own processor and chat template, each picture as the dataset's
    largest one (its files' headers; `pick` min: its smallest) at the run's image detail; where the processor is not on this machine, the
    memory is sized for max_length and the time for TOKENS_PER_SAMPLE a sample."""
    from ..errors import ModelLoadError
    from ..models.families import choose_detail, profile_for
    from ..models.resolve import read_config
    from ..models.sizes import REFERENCE_PICTURE, conversation_tokens, picture_tokens, vision_positions_per_token

    folder = Path(spec.model_source or spec.model)
    pictures = sum(len(sample.images) for sample in samples) / max(1, len(samples))
    rough = Count(None, spec.max_length, TOKENS_PER_SAMPLE, pictures, 1, "", 0)
    try:
        config = read_config(folder)
    except ModelLoadError:  # not on this machine (a hub id), or not readable: sized roughly
        return rough
    profile = profile_for(config)
    detail, _ = choose_detail(spec.image_detail, profile, "cuda" if on_gpu else "cpu")
    picture = _picture(samples, pick) or REFERENCE_PICTURE
    counts = conversation_tokens(folder, detail, [sample.messages for sample in samples], picture)
    if counts is None:
        return rough
    fitting = [count for count in counts if count <= spec.max_length]
    too_long = len(counts) - len(fitting)
    fitting = fitting or [spec.max_length]
    return Count(picture_tokens(folder, detail, picture), max(fitting), sum(fitting) / len(fitting), pictures,
                 vision_positions_per_token(config), detail, too_long, profile.detail is not None, min(counts))


def _picture(samples, pick=max) -> tuple[int, int] | None:
    """(width, height) of the largest (`pick` min: smallest) picture file among `samples` as the run loads them
    (read_dataset decoded each already; a picture the loader refuses is none), None when none loads."""
    sizes = [picture_size(path) for path in {path for sample in samples for path in sample.images
                                              if not path.startswith("data:")}]
    return pick(filter(None, sizes), key=lambda size: size[0] * size[1], default=None)


def _short_of_ram(size, tokens: int, batch_size: int, peak: float, checkpointing: bool, detail: str,
                  free_gib: float) -> str:
    """What to change when a CPU run's peak is more than the RAM available ('' when it fits)."""
    if peak <= free_gib:
        return ""
    ways = []
    if not checkpointing:
        saved = peak - peak_gib(size, on_gpu=False, tokens=tokens, batch_size=batch_size, checkpointing=True)
        if saved >= 0.1:
            ways.append(f"set gradient checkpointing on (~{saved:.1f} GiB less)")
    if detail == "high":
        ways.append("image detail low (fewer image tokens a picture)")
    if batch_size > 1:
        ways.append("a smaller batch size")
    return (f"This run needs ~{peak:.1f} GiB of RAM and {free_gib:.1f} GiB is available: "
            + ("; ".join(ways) or "close other programs or pick a smaller model") + ".")


def _gpu_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
