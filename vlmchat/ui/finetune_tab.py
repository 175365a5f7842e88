"""The Fine-tune tab and its API endpoints: dataset check, settings, Start / Cancel / Resume, live curves.

Training runs in a child process (vlmchat/finetune/runner.py); this tab only writes job.json and
reads progress.jsonl, every two seconds, so closing the browser tab or reloading the page never
affects the run and the page re-attaches to it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import gradio as gr

from ..errors import VlmchatError
from ..finetune import runner
from ..finetune.datasets import preview_rows, read_dataset
from ..finetune.progress import format_seconds
from ..finetune.spec import JobSpec
from ..finetune.uploads import PREFIX, resolve_dataset, store_upload
from ..models.manager import ModelManager
from ..models.resolve import resolve_model
from ..settings import Settings
from .sharing import refuse_server_paths

# The [finetune] settings shown as controls, in this order: (key, label).
CONTROLS = (
    ("r", "LoRA rank r"), ("lora_alpha", "LoRA alpha"), ("lora_dropout", "LoRA dropout"),
    ("targets", "Train which layers"), ("learning_rate", "Learning rate"), ("warmup_ratio", "Warmup share"),
    ("epochs", "Epochs"), ("max_steps", "Max steps (0 = by epochs)"), ("batch_size", "Batch size"),
    ("grad_accumulation", "Gradient accumulation"), ("max_length", "Max tokens per sample"),
    ("train_fraction", "Training share (rest = validation)"), ("eval_every", "Eval every N steps"),
    ("checkpoint_every", "Checkpoint every N steps"), ("keep_checkpoints", "Keep last K checkpoints"),
    ("early_stopping_patience", "Early stopping patience (0 = off)"), ("quantization", "Quantization"),
    ("gradient_checkpointing", "Gradient checkpointing"), ("optimizer", "Optimizer"),
    ("caption_prompt", "Prompt paired with .txt captions"),
)
CHOICES = {"targets": ["language", "language+projector", "all"], "quantization": ["auto", "none", "4bit"],
           "gradient_checkpointing": ["auto", "on", "off"], "optimizer": ["auto", "adamw", "paged_adamw_8bit"]}


class FinetuneActions:
    """What the tab and the API endpoints do, free of layout."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.jobs = runner.jobs_folder(settings)

    def dataset(self, upload, path: str) -> str:
        """A dataset reference from an upload ('upload:<id>') or a local path (refused when shared)."""
        if upload:
            return store_upload(upload if isinstance(upload, str) else upload.name, self.settings)
        if path and path.strip():
            if not path.strip().startswith(PREFIX):
                refuse_server_paths(self.settings, "training")
            return path.strip()
        raise gr.Error("Upload a dataset (.zip or .jsonl) or type the path of a folder or file.")

    def check(self, reference: str) -> dict:
        """Format, usable sample count, problems (file/line) and the first samples of a dataset."""
        report = read_dataset(resolve_dataset(reference, self.settings), self.settings.finetune.caption_prompt)
        return {"dataset": reference, "format": report.format, "samples": len(report.samples),
                "problems": [str(p) for p in report.problems], "preview": preview_rows(report, 6)}

    def spec(self, reference: str, name: str, options: dict | None, overwrite: bool) -> JobSpec:
        model = self.manager.info.model_id if self.manager.info else self.settings.model.id
        options = {k: v for k, v in (options or {}).items() if k in {f.name for f in dataclasses.fields(JobSpec)}}
        options.pop("adapters_dir", None)  # never from a client: adapters go to the configured folder
        return JobSpec.from_settings(self.settings, (name or "").strip(),
                                     str(resolve_dataset(reference, self.settings)), model=model,
                                     model_source=resolve_model(model, self.settings).location,
                                     overwrite=bool(overwrite), **options)

    def start(self, reference: str, name: str, options: dict | None = None, overwrite: bool = False) -> dict:
        spec = self.spec(reference, name, options, overwrite)
        read_dataset(spec.data, spec.caption_prompt).require_usable(spec.skip_invalid)
        job = runner.start_job(spec, self.jobs)
        return {"job_id": job.name, "command": spec.command(), "config": dataclasses.asdict(spec)}

    def job(self, job_id: str = "") -> Path | None:
        if job_id:
            path = self.jobs / job_id
            if "/" in job_id or job_id.startswith(".") or not path.is_dir():
                raise gr.Error(f"There is no fine-tune job '{job_id}'.")
            return path
        return runner.running_job(self.jobs) or runner.latest_job(self.jobs)

    def status(self, job_id: str = "") -> dict:
        job = self.job(job_id)
        if job is None:
            return {"state": "none", "message": "No fine-tune has run yet."}
        return dataclasses.asdict(runner.job_status(job))

    def cancel(self, job_id: str = "") -> str:
        job = self.job(job_id)
        if job is None or not runner.is_alive(job):
            raise gr.Error("No fine-tune is running.")
        runner.cancel_job(job)
        return f"Cancelling {job.name}: it stops after the current step and keeps a checkpoint."

    def resume(self, job_id: str = "") -> dict:
        job = self.job(job_id)
        if job is None:
            raise gr.Error("There is no fine-tune job to resume.")
        runner.resume_job(job)
        return {"job_id": job.name}


def _guard(action):
    """`action` with VlmchatErrors turned into gr.Error (signature kept, for gr.api's typing)."""
    @functools.wraps(action)
    def wrapped(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except VlmchatError as exc:
            raise gr.Error(str(exc)) from None
    return wrapped


def _status_markdown(status: dict) -> str:
    if status.get("state") in (None, "none"):
        return status.get("message", "")
    line = [f"**{status['job_id']}** — **{status['state']}**, step {status['step']}/{status['total_steps'] or '?'}"]
    if status.get("loss") is not None:
        line.append(f"loss {status['loss']:.4f}")
    if status.get("eval_loss") is not None:
        line.append(f"eval loss {status['eval_loss']:.4f}")
    if status.get("samples_per_s"):
        line.append(f"{status['samples_per_s']:.1f} samples/s")
    if status.get("eta_s") is not None and status["state"] == "running":
        line.append(f"ETA {format_seconds(status['eta_s'])}")
    if status.get("memory_gib"):
        line.append(f"memory {status['memory_gib']:.2f} GiB")
    text = " · ".join(line)
    if status.get("message"):
        text += f"  \n{status['message']}"
    if status.get("setup"):
        text += "  \n<small>" + "; ".join(f"{k}: {v}" for k, v in status["setup"].items()) + "</small>"
    return text


def _curves(status: dict):
    import pandas as pd

    rows = [(s, v, "loss") for s, v in status.get("losses", [])]
    stride = max(1, len(rows) // 400)  # a few hundred points are enough for the plot
    rows = rows[::stride] + [(s, v, "eval loss") for s, v in status.get("eval_losses", [])]
    return pd.DataFrame(rows or [(0, None, "loss")], columns=["step", "value", "series"])


def _job_files(actions: FinetuneActions, status: dict) -> tuple[str, str]:
    job = actions.jobs / status["job_id"] if status.get("job_id") else None
    if job is None or not (job / "job.json").is_file():
        return "", ""
    spec = JobSpec.from_file(job / "job.json")
    return spec.to_json(), spec.command()


def _settings_controls(defaults) -> dict:
    """One control per [finetune] setting, in an accordion; returns {key: component}."""
    controls = {}
    with gr.Accordion("Settings (defaults from settings.toml [finetune])", open=False):
        with gr.Row(equal_height=True):
            for key, label in CONTROLS:
                value = getattr(defaults, key)
                if key in CHOICES:
                    controls[key] = gr.Dropdown(CHOICES[key], value=value, label=label, min_width=160)
                elif isinstance(value, str):
                    controls[key] = gr.Textbox(value=value, label=label, min_width=160)
                else:
                    controls[key] = gr.Number(value=value, label=label, precision=0 if isinstance(value, int) else None,
                                              min_width=160)
    return controls


def _check_result(result: dict) -> tuple[str, list]:
    """The report markdown and the preview rows of a dataset check."""
    problems = "\n".join(f"- {p}" for p in result["problems"][:30])
    more = f"\n- … and {len(result['problems']) - 30} more" if len(result["problems"]) > 30 else ""
    text = (f"**{result['format']}**: {result['samples']} usable samples, {len(result['problems'])} problems."
            + (f"\n\n{problems}{more}" if problems else ""))
    rows = [[r["source"], ", ".join(Path(i).name for i in r["images"]), r["prompt"], r["answer"]]
            for r in result["preview"]]
    return text, rows


def build_finetune_tab(manager: ModelManager, settings: Settings) -> FinetuneActions:
    """Lay out the Fine-tune tab inside the current Blocks and register its API endpoints."""
    actions = FinetuneActions(manager, settings)
    defaults = settings.finetune
    gr.Markdown("Train a LoRA adapter on your own images. Training runs in a separate process: chat keeps "
                "working, and you can close this page and come back.")
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Dataset upload (.zip of images + .txt captions or of a .jsonl with its images; "
                                   "or a .jsonl)", file_types=[".zip", ".json", ".jsonl"])
            path = gr.Textbox(label="…or a folder / file on this computer", visible=not settings.server.exposed)
            check = gr.Button("Check dataset")
        with gr.Column():
            report = gr.Markdown()
            dataset = gr.Textbox(label="Dataset used", interactive=False)
    preview = gr.Dataframe(headers=["source", "images", "prompt", "answer"], label="First samples",
                           interactive=False, wrap=True)
    with gr.Row():
        name = gr.Textbox(label="Adapter name", placeholder="my-adapter")
        overwrite = gr.Checkbox(label="Overwrite an adapter of the same name", value=False)
        skip_invalid = gr.Checkbox(label="Skip rows with problems", value=False)
    controls = _settings_controls(defaults)
    with gr.Row():
        start = gr.Button("Start", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        resume = gr.Button("Resume")
    status = gr.Markdown(elem_id="vlmchat-finetune-status")
    plot = gr.LinePlot(x="step", y="value", color="series", label="Loss", height=300)
    with gr.Accordion("Exact config and command of this run", open=False):
        config = gr.Code(language="json", label="job.json")
        command = gr.Code(language="shell", label="The same run from a terminal")
    job_id = gr.State("")
    timer = gr.Timer(2.0)

    def do_check(file, typed):
        reference = actions.dataset(file, typed)
        return *_check_result(actions.check(reference)), reference

    def do_start(reference, file, typed, name, overwrite, skip, *values):
        reference = reference or actions.dataset(file, typed)
        options = {key: (int(v) if isinstance(getattr(defaults, key), int) else v)
                   for (key, _), v in zip(CONTROLS, values)}
        started = actions.start(reference, name, {**options, "skip_invalid": bool(skip)}, overwrite)
        return started["job_id"], *refresh(started["job_id"])

    def refresh(current):
        state = actions.status(current)
        files = _job_files(actions, state)
        return _status_markdown(state), _curves(state), *files

    outputs = [status, plot, config, command]
    check.click(_guard(do_check), [upload, path], [report, preview, dataset], api_visibility="undocumented")
    start.click(_guard(do_start), [dataset, upload, path, name, overwrite, skip_invalid, *controls.values()],
                [job_id, *outputs], api_visibility="undocumented")
    cancel.click(_guard(lambda j: (actions.cancel(j), *refresh(j))[1:]), job_id, outputs, api_visibility="undocumented")
    resume.click(_guard(lambda j: refresh(actions.resume(j)["job_id"])), job_id, outputs, api_visibility="undocumented")
    timer.tick(_guard(refresh), job_id, outputs, api_visibility="undocumented", queue=False)
    _register_api(actions)
    return actions


def _register_api(actions: FinetuneActions) -> None:
    def finetune_check(dataset: str) -> dict:
        """Check a dataset ('upload:<id>' from finetune_upload, or a local path): format, count, problems, preview."""
        if not dataset.startswith(PREFIX):
            refuse_server_paths(actions.settings, "training")
        return actions.check(dataset)

    def finetune_start(dataset: str, name: str, options: dict | None = None, overwrite: bool = False) -> dict:
        """Start a fine-tune in a child process; options are [finetune] keys. Returns job_id, command, config."""
        if not dataset.startswith(PREFIX):
            refuse_server_paths(actions.settings, "training")
        return actions.start(dataset, name, options, overwrite)

    def finetune_status(job_id: str = "") -> dict:
        """State, step, losses, eval losses, samples/s, ETA and memory of a job ('' = the running or newest)."""
        return actions.status(job_id)

    def finetune_cancel(job_id: str = "") -> str:
        """Stop a running job after its current step; its last checkpoint is kept for Resume."""
        return actions.cancel(job_id)

    def finetune_resume(job_id: str = "") -> dict:
        """Continue a cancelled, failed or interrupted job from its last checkpoint."""
        return actions.resume(job_id)

    for fn in (finetune_check, finetune_start, finetune_status, finetune_cancel, finetune_resume):
        gr.api(_guard(fn), api_name=fn.__name__, api_description=fn.__doc__)
    upload = gr.File(visible=False)
    reference = gr.Textbox(visible=False)
    upload.upload(_guard(lambda f: store_upload(f, actions.settings)), upload, reference, api_name="finetune_upload",
                  api_description="Upload a dataset (.zip or .jsonl); returns 'upload:<id>' for finetune_start.")
