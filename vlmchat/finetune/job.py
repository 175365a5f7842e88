"""The child process of a fine-tune: `python -m vlmchat.finetune <job folder>/job.json [--resume]`.

Also runs under `accelerate launch --num_processes N -m vlmchat.finetune job.json` (several GPUs or
machines, or CPU processes with the gloo backend), with the job's `distributed` strategy (ddp or fsdp;
see distributed.py). It reads the dataset, loads the base model on its own (never
the model the UI chats with), trains LoRA, and reports through progress.jsonl in the job folder.
SIGTERM / SIGINT, a `cancel` file in the job folder or the end of the terminal's `launch.py finetune` that
started it stops it after the current step with a checkpoint; `--resume` continues from the last checkpoint,
on the dataset the job started on. The finished adapter is written atomically into adapters/<name>/; a
failure or cancel never leaves a half-written adapter there.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback
import types
from pathlib import Path

from ..errors import InputError, VlmchatError, named
from .progress import PROGRESS_FILE, ProgressWriter
from .recipe import AUTO_BATCH_SIZE
from .spec import JOB_FILE, JobSpec

CANCEL_FILE = "cancel"
# Set in the child's environment when no UI shares the machine with it: the reason, shown with the thread
# count; the child then trains on every core instead of leaving one to the UI and its chat model.
ALONE_ENV = "VLMCHAT_CPU_ALONE"
# Set by a terminal's `launch.py finetune` to its process id: the job stops as on Cancel once that process is gone,
# however it ended (SIGKILL, SIGQUIT: no handler of its own runs). A job the UI starts goes on without the app.
LAUNCHER_ENV = "VLMCHAT_LAUNCHER_PID"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child; the exit code is 0 for done/cancelled, 1 for a failure."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m vlmchat.finetune JOB_FOLDER/job.json [--resume]")
        return 0 if argv else 2
    job_file = Path(argv[0])
    job_dir = job_file.parent if job_file.name == JOB_FILE else job_file
    return run_job(JobSpec.from_file(job_dir / JOB_FILE), job_dir, resume="--resume" in argv)


def _stop_flag(job_dir: Path):
    """A function telling whether a stop was asked (signal received, cancel file present, launcher gone)."""
    asked = {"signal": False}
    launcher = int(os.environ.get(LAUNCHER_ENV) or 0)

    def on_signal(signum, frame):
        asked["signal"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return lambda: asked["signal"] or (job_dir / CANCEL_FILE).exists() or (launcher and _gone(launcher))


def _gone(pid: int) -> bool:
    if os.name == "nt":  # signal 0 is CTRL_C_EVENT there: the launcher's Ctrl-C reaches the job by itself
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def run_job(spec: JobSpec, job_dir: Path, resume: bool = False) -> int:
    """Run one job to its end, reporting every outcome as a final event in progress.jsonl."""
    from .distributed import make_accelerator

    job_dir = Path(job_dir)
    stop = _stop_flag(job_dir)
    try:
        accelerator = make_accelerator(spec.distributed, cpu=not _use_gpu(spec))
    except (VlmchatError, RuntimeError, ValueError) as exc:
        ProgressWriter(job_dir / PROGRESS_FILE)("failed", step=0, message=" ".join(describe_failure(exc, spec, False)).strip())
        return 1
    emit = ProgressWriter(job_dir / PROGRESS_FILE, enabled=accelerator.is_main_process)
    trainer = None
    try:
        trainer = _prepare(spec, job_dir, accelerator, emit, stop, resume)
        outcome = trainer.run()
        if outcome == "cancelled":
            emit("cancelled", step=trainer.step, checkpoint=str(_last_checkpoint(job_dir)),
                 message=f"Cancelled at step {trainer.step}; the checkpoint is kept, Resume continues from it.")
            return 0
        from .output import install_adapter

        path, metrics = install_adapter(trainer, outcome)
        if spec.evaluate and path is not None:
            evaluate_adapter(trainer, path, emit)
        # "done, step 500/700" said nothing of why it ended early or which step's weights it kept (reviewer)
        patience = spec.early_stopping_patience
        stopped = (f" Stopped early at step {trainer.step}: the eval loss had not improved in {patience} "
                   f"evaluation{'s' if patience != 1 else ''}." if outcome == "early" else "")
        kept = (f" The weights are those of step {metrics['weights_from_step']} (the best eval loss)."
                if metrics.get("weights_from_step") not in (None, trainer.step) else "")
        emit("done", step=trainer.step, adapter=spec.name, path=str(path), metrics=metrics,
             message=f"Adapter '{spec.name}' written to {path} in {metrics['duration_s']:.0f}s.{stopped}{kept}"
                     f"{_skipped(trainer)}")
        return 0
    except BaseException as exc:  # reported to the UI; the UI process itself is never affected
        checkpoint = _last_checkpoint(job_dir)
        message, hint = describe_failure(exc, trainer.spec if trainer else spec, checkpoint is not None)
        emit("failed", step=trainer.step if trainer else 0, message=f"{message} {hint}".strip(),
             checkpoint=str(checkpoint or ""), error=type(exc).__name__)
        traceback.print_exc()
        return 1
    finally:
        accelerator.end_training()


def _skipped(trainer) -> str:
    """' N samples were left out: file:line: why, …' for the samples the run could not encode (too long)."""
    skipped = [*trainer.train.skipped.values(), *trainer.val.skipped.values()]
    if not skipped:
        return ""
    shown = "; ".join(skipped[:5]) + (f"; … and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    hint = " (raise max_length to keep those over it)" if any("over max_length" in why for why in skipped) else ""
    where = "" if trainer.acc.num_processes == 1 else " by the first process"
    return f" {len(skipped)} sample(s) were left out{where}: {shown}{hint}."


def min_eval_samples() -> int:
    """The fewest validation samples on which an exact McNemar test can call a difference significant (6: all
    answered right by one model and wrong by the other). With 50-99 pictures the default 20% split holds 10-19:
    enough for a style the base never answers in; the verdict's next step says when more pictures are needed."""
    from ..evaluate.stats import fewest_flips

    return fewest_flips()


def worse_advice(name: str, numbers: dict, model: str) -> str:
    """What to do when the new adapter answers the validation pictures significantly worse than the base (a run
    whose loss stalled high wrote runs of dots; the verdict alone left the user with no next step), else ""."""
    if not (numbers.get("significant") and numbers.get("points", 0) < 0):
        return ""
    from ..settings import DEMO_MODEL_ID

    small = (" The demo model (1 M parameters, a vocabulary of a few hundred pieces) learns words it does not "
             "already use poorly: try answers in its own words, or a real model." if model == DEMO_MODEL_ID else "")
    return (f"Do not use {name} as it is: it answers the validation pictures worse than the base does (see its "
            "answers beside the base's in Compare). Train again with more steps (the thorough preset, or more "
            "epochs) and the automatic learning rate if you set one, and check that the dataset's answers are what "
            "it should say." + small)


def _record_verdict(adapter: Path, verdict: str, numbers: dict, advice: str = "") -> None:
    """The verdict (or why there is none) and what to do next in the adapter's vlmchat.json, beside its other
    metrics (the next step was only in the Fine-tune tab and the terminal: blind tester)."""
    import json

    from ..lora.store import META_FILE, write_metadata

    meta = json.loads((adapter / META_FILE).read_text(encoding="utf-8"))
    meta.setdefault("metrics", {}).update(validation_verdict=verdict, validation_eval=numbers,
                                          **({"validation_next": advice} if advice else {}))
    write_metadata(adapter, meta)  # keeps its "created"


def evaluate_adapter(trainer, adapter: Path, emit) -> None:
    """Base vs the new adapter on the validation split (captions of its answers); emits an "evaluation" event."""
    val, fewest = trainer.val.samples, min_eval_samples()
    if len(val) < fewest:
        message = (f"Not evaluated: the validation split has {len(val)} sample{'' if len(val) == 1 else 's'} (a "
                   f"comparison with the base can tell nothing on fewer than {fewest}). For a verdict, evaluate "
                   f"{adapter.name} on 20 or more pictures it did not train on, with their captions in any caption "
                   "set the Evaluate tab reads (a .txt beside each picture, metadata.jsonl, rows of image and "
                   f"caption): the Evaluate tab, or `launch.py eval --data FOLDER --adapter {adapter.name}`.")
        emit("evaluation", message=message)
        _record_verdict(adapter, message, {})  # the adapter's vlmchat.json said nothing of why there was none
        return
    import gc

    trainer.model = trainer.optimizer = None  # the training copy goes before an evaluation copy is loaded
    gc.collect()
    try:
        from ..evaluate.stats import next_step
        from ..evaluate.validation import evaluate_on_validation

        what = f"Evaluating base vs {adapter.name} on the {len(val)} validation samples"
        emit("evaluation", running=True, message=f"{what}: loading the base model")

        def progress(done: int, total: int, text: str) -> None:
            emit("evaluation", running=True, message=f"{what}: {text}")

        asked = types.SimpleNamespace(is_set=trainer.stop_requested)  # Cancel / Ctrl-C: as run_eval's Event
        verdict, numbers, folder = evaluate_on_validation(trainer.spec, adapter, val, trainer.job_dir, progress, asked)
        worse = worse_advice(adapter.name, numbers, trainer.spec.model)
        advice = worse or (next_step(numbers) if numbers else "")
        emit("evaluation", verdict=verdict, numbers=numbers, folder=str(folder), advice=advice,
             warns=bool(worse or numbers.get("repeats")),
             message=" ".join(filter(None, [verdict, advice])))
        _record_verdict(adapter, verdict, numbers, advice)
    except Exception as exc:  # the adapter is written; a failed evaluation is reported, not fatal
        emit("evaluation", message=f"The evaluation after training failed: {named(exc)}")


def _use_gpu(spec: JobSpec) -> bool:
    import torch

    if spec.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device = cuda but no CUDA GPU is visible; use device auto or cpu.")
    return spec.device != "cpu" and torch.cuda.is_available()


def _last_checkpoint(job_dir: Path) -> Path | None:
    from .loop import checkpoints

    found = checkpoints(job_dir)
    return found[-1] if found else None


def _prepare(spec: JobSpec, job_dir: Path, accelerator, emit, stop, resume: bool):
    """Dataset, setup, model, optimizer and Trainer, restored from the last checkpoint when resuming."""
    from .datasets import dataset_hash, read_dataset, split
    from .distributed import configure
    from .loop import Trainer
    from .model import load_for_training, make_optimizer, make_schedule

    if not resume:
        spec.refuse_existing_adapter()
    report = read_dataset(spec.data, spec.caption_prompt)
    samples = report.require_usable(spec.skip_invalid)
    if resume:
        refuse_changed_dataset(spec, job_dir, samples)
    if accelerator.num_processes > 1 and len({bool(sample.images) for sample in samples}) > 1:
        raise InputError(f"{sum(not s.images for s in samples)} of the {len(samples)} samples have no picture: a "
                         "dataset that mixes samples with and without pictures trains on one process (every process "
                         "must run the same forward passes); use num_processes = 1, or train them apart.")
    train, val = split(samples, spec.train_fraction, spec.seed)
    size = model_size(spec)
    schedule = resolve_schedule(spec, len(train), size, accelerator.num_processes)
    spec = dataclasses.replace(spec, epochs=schedule.epochs, batch_size=schedule.batch_size,
                               grad_accumulation=schedule.grad_accumulation, learning_rate=schedule.learning_rate)
    setup = training_setup(spec, accelerator, size, train)
    import torch

    torch.manual_seed(spec.seed)
    if setup.threads:
        torch.set_num_threads(setup.threads)
    model, processor = load_for_training(spec, setup, accelerator.device)
    configure(accelerator, model)
    optimizer = make_optimizer(model, setup, spec.learning_rate)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainer = Trainer(accelerator, spec, model, processor, optimizer, None, train, val, job_dir, emit, stop)
    trainer.schedule = make_schedule(optimizer, trainer.total, spec.warmup_ratio)
    setup = dataclasses.replace(setup, reasons={**setup.reasons, "pictures": trainer.detail.reason})
    trainer.report, trainer.setup, trainer.schedule_reasons = report, setup, schedule.reasons
    checkpoint = _last_checkpoint(job_dir) if resume else None
    if resume and checkpoint is None:
        raise InputError(f"Nothing to resume: job {job_dir.name} has no checkpoint yet; start it again instead.")
    if checkpoint is not None:
        trainer.restore(checkpoint)
    trainable, total = accelerator.unwrap_model(model).get_nb_trainable_parameters()
    emit("resume" if checkpoint else "start", step=trainer.step, total_steps=trainer.total, pid=os.getpid(),
         processes=accelerator.num_processes, train_size=len(train), val_size=len(val),
         dataset_format=report.format, skipped_rows=len(report.problems), setup=setup.reasons,
         schedule=schedule.reasons, schedule_warning=schedule.warning, learning_rate=spec.learning_rate,
         epochs=spec.epochs, effective_batch=schedule.effective_batch * accelerator.num_processes,
         trainable_parameters=trainable, parameters=total,
         **({} if checkpoint else {"dataset": {"sha256": dataset_hash(train + val), "size": len(samples)}}),
         message=f"{'Resumed at step ' + str(trainer.step) if checkpoint else 'Started'}: {len(train)} training "
                 f"and {len(val)} validation samples, {trainable:,} trainable parameters, "
                 f"{accelerator.num_processes} process(es).")
    return trainer


def refuse_changed_dataset(spec: JobSpec, job_dir: Path, samples: list) -> None:
    """InputError when the usable `samples` are not those the job started on (its start event; vlmchat.json's
    sha256): resumed, it would draw another train/validation split, putting pictures it trained on in validation."""
    from .datasets import dataset_hash, split
    from .progress import read_events

    started = next((e.get("dataset") for e in read_events(job_dir / PROGRESS_FILE) if e["event"] == "start"), None)
    if not started:  # started by a vlmchat that did not record it
        return
    train, val = split(samples, spec.train_fraction, spec.seed)
    now = dataset_hash(train + val)
    if now != started["sha256"]:
        raise InputError(f"The dataset changed since {job_dir.name} started: it had {started['size']} usable samples "
                         f"(sha256 {started['sha256'][:12]}…), it has {len(samples)} (sha256 {now[:12]}…) now. "
                         "Resumed, the job would draw a new train/validation split, and pictures it has trained on "
                         "could land in validation. Restore the dataset as it was to resume, or start a new run on "
                         "it (the same command without --resume; --overwrite replaces an adapter of the same name).")


def model_size(spec: JobSpec):
    """The base model's ModelSize from the job's own model location (None when it cannot be read)."""
    try:  # job.json is self-contained: settings.toml is not read here
        from ..models.resolve import resolve_model
        from ..models.sizes import size_for_source
        from ..settings import Settings

        settings = Settings()
        return size_for_source(resolve_model(spec.model_source or spec.model, settings), settings)
    except (ImportError, VlmchatError, OSError, ValueError):
        return None


def resolve_schedule(spec: JobSpec, train_samples: int, size, processes: int = 1):
    """The Schedule for this job: its "auto" values chosen from the data, the model's recipe and the preset."""
    from .recipe import plan_schedule, read_recipe

    source = spec.model_source or spec.model
    return plan_schedule(dataclasses.asdict(spec), train_samples, size_b=size.total_b if size else None,
                         recipe=read_recipe(source if Path(source).is_dir() else None), preset=spec.preset,
                         processes=processes, max_steps=spec.max_steps)


def training_setup(spec: JobSpec, accelerator, size=None, samples=()):
    """The TrainingSetup for this machine (the quantization plan is consulted on a GPU only), its activations sized
    by the longest of the training `samples` (`plan.sample_tokens`; max_length when there are none)."""
    from .distributed import fit_sharded, shards
    from .plan import sample_tokens
    from .setup import choose_setup

    common = dict(quantization=spec.quantization, gradient_checkpointing=spec.gradient_checkpointing,
                  optimizer=spec.optimizer, batch_size=spec.batch_size)
    split = shards(accelerator)
    on_gpu = accelerator.device.type == "cuda"
    tokens = sample_tokens(spec, samples, on_gpu) if samples else spec.max_length
    if not on_gpu:
        from .plan import ram_per_process

        setup = choose_setup(on_gpu=False, cpu_cores=usable_cores(), processes=accelerator.num_processes,
                             alone=os.environ.get(ALONE_ENV, ""), size=size,
                             free_gib=ram_per_process(accelerator.num_processes),
                             tokens=tokens, **common)
        return fit_sharded(setup, split, spec.distributed)
    import torch

    from ..models.plan import bnb_available

    free, _ = torch.cuda.mem_get_info(accelerator.device)  # the weights are split over `split` GPUs
    setup = choose_setup(on_gpu=True, free_gib=free / 2**30 * split, size=size, bf16=torch.cuda.is_bf16_supported(),
                         bnb=bnb_available(), device_name=torch.cuda.get_device_name(accelerator.device),
                         tokens=tokens, **common)
    return fit_sharded(setup, split, spec.distributed)


def usable_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe_failure(exc: BaseException, spec: JobSpec, checkpoint: bool = True) -> tuple[str, str]:
    """(what happened, what to change) for any exception of a run; `checkpoint`: the job has one to resume from."""
    name, text = type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    resume = " Resume continues from the last checkpoint." if checkpoint else ""
    if isinstance(exc, VlmchatError):
        return text, ""
    if "OutOfMemory" in name or "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return ("Out of memory.",
                f"Lower batch_size (now {AUTO_BATCH_SIZE if spec.batch_size == 'auto' else spec.batch_size}) and raise grad_accumulation to keep the effective batch, "
                f"lower max_length (now {spec.max_length}), set gradient_checkpointing = on, or quantization = 4bit "
                f"(QLoRA) on a GPU.{resume}")
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted.", resume.strip()
    return (f"Training failed: {name}: {text}"[:500],
            f"See log.txt in the job folder for the details.{resume}")
