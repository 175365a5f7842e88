"""The Fine-tune tab and its API endpoints: dataset check, settings, Start / Cancel / Resume, live curves.

Training runs in a child process (vlmchat/finetune/runner.py); this tab only writes job.json and
reads progress.jsonl, every two seconds, so closing the browser tab or reloading the page never
affects the run and the page re-attaches to it. Under a login, each user's uploads and jobs live in
a folder of their own (ui/users.py) and nobody else's are found; one job runs at a time in all.
"""

from __future__ import annotations

import dataclasses
import functools
import html
from pathlib import Path

import gradio as gr

from ..errors import VlmchatError
from ..finetune import runner
from ..finetune.datasets import counted, preview_rows, read_dataset
from ..finetune.progress import format_rate, format_seconds
from ..finetune.spec import CLI_FLAGS, HYPERPARAMETERS, JOB_FILE, JobSpec
from ..finetune.uploads import PREFIX, resolve_dataset, store_upload
from ..models.manager import ModelManager
from ..models.resolve import resolve_model
from ..settings import Settings
from .errors import guard as _guard, said
from .sharing import refuse_server_paths, shown_text
from .uploads import given_data, upload_endpoint, user_uploads
from .users import refuse_anothers_adapter, user_folder

# The form is built from the [finetune] fields and their metadata (vlmchat/settings.py), in their order, and the
# job's image detail (its default is Chat's: [generation] image_detail).
FIELDS = {f.name: f for f in dataclasses.fields(JobSpec) if f.name in HYPERPARAMETERS or f.name == "image_detail"}


def _label(key: str) -> str:
    return key.replace("_", " ").capitalize() + " — " + FIELDS[key].metadata.get("help", "")


def _form_value(key: str, value):
    """A control's value as the setting wants it: "auto" or a number for auto fields, ints for int fields."""
    spec = FIELDS[key]
    if spec.metadata.get("auto"):
        text = str(value).strip().lower()
        if text in ("", "auto"):
            return "auto"
        try:
            number = float(text)
        except ValueError:
            raise gr.Error(f"{key.replace('_', ' ')}: type a number or auto (got {value!r}).") from None
        return number if "float" in str(spec.type) else int(number)
    if str(spec.type) == "int" and value is not None:
        return int(value)
    return value


class FinetuneActions:
    """What the tab and the API endpoints do, free of layout."""

    def __init__(self, manager: ModelManager, settings: Settings):
        self.manager, self.settings = manager, settings
        self.jobs = runner.jobs_folder(settings)

    def jobs_of(self, request) -> Path:
        """The folder of the request's own jobs (the jobs folder itself when nobody logs in)."""
        return user_folder(self.jobs, request)

    def dataset(self, upload, path: str, request=None) -> str:
        """A dataset reference from an upload ('upload:<id>') or a local path (refused when shared)."""
        return given_data(self.settings, upload, path, request, "dataset", "training",
                          "a dataset (a .zip, or a .json/.jsonl/.csv/.parquet file)", "the path of a folder or file")

    def check(self, reference: str, request=None) -> dict:
        """Format, usable sample count, problems (file/line) and the first samples of a dataset."""
        report = read_dataset(resolve_dataset(reference, self.settings, user_uploads(self.settings, request)),
                              self.settings.finetune.caption_prompt)
        return {"dataset": reference, "format": report.format, "samples": len(report.samples),
                "problems": [str(p) for p in report.problems], "preview": preview_rows(report, 6)}

    def spec(self, reference: str, name: str, options: dict | None, overwrite: bool, request=None) -> JobSpec:
        model = self.manager.info.model_id if self.manager.info else self.settings.model.id
        if options is not None and not isinstance(options, dict):
            raise gr.Error('options must be a JSON object of [finetune] settings, e.g. {"max_steps": 100}.')
        options = dict(options or {})
        unknown = sorted(set(options) - set(CLI_FLAGS) - {"overwrite"})  # e.g. "max_step": ignored, a default run
        if unknown:
            known = ", ".join(key for key in CLI_FLAGS if key != "overwrite")
            raise gr.Error(f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; the "
                           f"options are the [finetune] settings: {known}.")
        options.pop("overwrite", None)  # an argument of its own
        return JobSpec.from_settings(self.settings, (name or "").strip(),
                                     str(resolve_dataset(reference, self.settings, user_uploads(self.settings, request))),
                                     model=model,
                                     model_source=resolve_model(model, self.settings).location,
                                     overwrite=bool(overwrite), **options)

    def plan(self, reference: str, options: dict | None = None, request=None) -> dict:
        """What Start will do with this dataset: samples, steps, epochs, learning rate, time and memory, warnings."""
        from ..finetune.plan import plan_run

        spec = self.spec(reference, "preview", options, True, request)
        return plan_run(spec)

    def start(self, reference: str, name: str, options: dict | None = None, overwrite: bool = False,
              request=None) -> dict:
        from ..finetune.plan import refuse_too_long

        spec = self.spec(reference, name, options, overwrite, request)
        if overwrite:  # replacing an adapter another login trained on its own upload is that login's to do
            refuse_anothers_adapter(self.settings.paths.resolve("adapters"), spec.name, request, "replace")
        refuse_too_long(spec, read_dataset(spec.data, spec.caption_prompt).require_usable(spec.skip_invalid))
        mine = self.jobs_of(request)
        other = self._running_elsewhere(mine) if mine != self.jobs else None
        if other is not None:  # how far it is, not whose or what: that is the other login's
            status = runner.job_status(other)
            far = f"step {status.step} of {status.total_steps}" if status.total_steps else "starting"
            if status.eta_s:
                far += f", about {format_seconds(status.eta_s)} left"
            raise gr.Error(f"Another user's fine-tune is running ({far}); one runs at a time. Try again when it "
                           "has finished.")
        job = runner.start_job(spec, mine)
        shown = shown_spec(self.settings, spec)
        return {"job_id": job.name, "command": shown.command(), "config": dataclasses.asdict(shown)}

    def _running_elsewhere(self, mine: Path) -> Path | None:
        """The job of another login (or of the local user) running now, if any."""
        folders = [self.jobs] + sorted((self.jobs / "users").glob("*"))
        return next((job for folder in folders if folder != mine and (job := runner.running_job(folder))), None)

    def job(self, job_id: str = "", request=None) -> Path | None:
        """The request's own job `job_id` ('' = its running or newest job); another login's is not found."""
        jobs = self.jobs_of(request)
        if job_id:
            path = jobs / job_id
            if "/" in job_id or "\\" in job_id or job_id.startswith(".") or job_id == "users" or not path.is_dir():
                raise gr.Error(f"There is no fine-tune job '{job_id}'.")
            return path
        return runner.running_job(jobs) or runner.latest_job(jobs)

    def status(self, job_id: str = "", request=None) -> dict:
        job = self.job(job_id, request)
        if job is None:
            return {"state": "none", "message": "No fine-tune has run yet."}
        return dataclasses.asdict(runner.job_status(job))

    def last_form(self, request=None) -> tuple[str, str]:
        """(dataset reference, adapter name) of the request's newest job, for a page opened after it: its form came
        back empty, and starting again afresh after a Cancel meant uploading the dataset again (UI tester)."""
        job = self.job("", request)
        try:
            spec = JobSpec.from_file(job / JOB_FILE) if job is not None else None
        except (OSError, ValueError, TypeError, VlmchatError):  # a job folder being written, or of another version
            spec = None
        if spec is None:
            return "", ""
        name = "" if (Path(spec.adapters_dir) / spec.name).exists() else spec.name  # not one written already
        try:  # an upload by its reference, as Check gave it
            return PREFIX + Path(spec.data).relative_to(user_uploads(self.settings, request)).parts[0], name
        except (ValueError, IndexError):
            return ("" if self.settings.server.exposed else spec.data), name  # a path typed on this computer

    def cancel(self, job_id: str = "", request=None) -> str:
        job = self.job(job_id, request)
        if job is None:
            raise gr.Error("No fine-tune is running.")
        state = runner.job_status(job).state
        if not runner.is_alive(job):
            raise gr.Error(f"No fine-tune is running: {job.name} has "
                           f"{'finished and written its adapter' if state == 'done' else 'stopped (' + state + ')'}.")
        runner.cancel_job(job)
        return f"Cancelling {job.name}: it stops after the current step and keeps a checkpoint."

    def resume(self, job_id: str = "", request=None) -> dict:
        job = self.job(job_id, request)
        if job is None:
            raise gr.Error("There is no fine-tune job to resume.")
        runner.resume_job(job)  # refuses a finished or running job; waits for a cancelled one still closing
        return {"job_id": job.name}


def _status_markdown(status: dict) -> str:
    if status.get("state") in (None, "none"):
        return status.get("message", "")
    line = [f"**{status['job_id']}** — **{status['state']}**, step {status['step']}/{status['total_steps'] or '?'}"]
    if status.get("loss") is not None:
        line.append(f"loss {status['loss']:.4f}")
    if status.get("eval_loss") is not None:
        line.append(f"eval loss {status['eval_loss']:.4f}")
    if status.get("samples_per_s"):
        line.append(format_rate(status["samples_per_s"]))
    if status.get("eta_s") is not None and status["state"] == "running" and \
            not (status.get("evaluation") or {}).get("running"):
        line.append(f"ETA {format_seconds(status['eta_s'])}")
    if status.get("memory_gib"):
        line.append(f"memory {status['memory_gib']:.2f} GiB")
    text = " · ".join(line)
    if status.get("message"):
        text += f"  \n{html.escape(status['message'], quote=False)}"
    if status.get("warning"):
        text += f"  \n⚠️ {html.escape(status['warning'], quote=False)}"
    evaluation = status.get("evaluation") or {}
    if evaluation.get("verdict"):
        text += f"  \n**Did it learn?** {evaluation['verdict']}"
        if evaluation.get("advice"):  # a warning sign for "do not use it", not for "pick it" (fine-tune reviewer)
            mark = "⚠️" if evaluation.get("warns", True) else "**Next:**"
            text += f"  \n{mark} {html.escape(evaluation['advice'], quote=False)}"
    elif evaluation.get("message"):
        text += f"  \n{evaluation['message']}"
    reasons = {**status.get("schedule", {}), **status.get("setup", {})}
    if reasons:
        text += "  \n<small>" + "; ".join(f"{k}: {v}" for k, v in reasons.items()) + "</small>"
    return text


SERIES = ("train loss", "eval loss")


def _curves(status: dict):
    """The loss curves as the plot's frame. It always holds both series (a point with no loss each, not drawn):
    Gradio's plot takes its colours from the series of the first frame it draws and keeps them, so a fresh job's
    plot (first frame empty) drew its lines in no colour at all, and an eval curve arriving later would be too."""
    import pandas as pd

    train, evaluation = SERIES
    rows = [(s, v, train) for s, v in status.get("losses", [])]
    stride = max(1, len(rows) // 400)  # a few hundred points are enough for the plot
    rows = ([(0, float("nan"), name) for name in SERIES] + rows[::stride]
            + [(s, v, evaluation) for s, v in status.get("eval_losses", [])])
    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "string"})


SETTINGS_SHOWN = "YOUR_SETTINGS"  # a shared app's settings file, as its job commands name it


def shown_spec(settings: Settings, spec: JobSpec) -> JobSpec:
    """`spec` as the app shows it: while others reach the app, its settings file is not named (the server's path)."""
    if settings.server.exposed and spec.settings_file:
        return dataclasses.replace(spec, settings_file=SETTINGS_SHOWN)
    return spec


def _job_files(actions: FinetuneActions, status: dict, request=None) -> tuple[str, str]:
    job = actions.jobs_of(request) / status["job_id"] if status.get("job_id") else None
    if job is None or not (job / "job.json").is_file():
        return "", ""
    spec = shown_spec(actions.settings, JobSpec.from_file(job / "job.json"))
    return spec.to_json(), spec.command()


def _settings_controls(settings: Settings) -> dict:
    """One control per [finetune] setting and the image detail: the preset and the basic ones shown, the rest
    under Advanced."""
    controls = {}
    defaults = {**dataclasses.asdict(settings.finetune), "image_detail": settings.generation.image_detail}

    def control(key):
        value, spec = defaults[key], FIELDS[key]
        label = _label(key)
        if "choices" in spec.metadata:
            radio = key in ("preset", "image_detail")
            return (gr.Radio if radio else gr.Dropdown)(list(spec.metadata["choices"]), value=value, label=label,
                                                         min_width=160)
        if isinstance(value, bool):
            return gr.Checkbox(value=value, label=label, min_width=160)
        if isinstance(value, str):
            return gr.Textbox(value=value, label=label, min_width=160)
        return gr.Number(value=value, label=label, precision=0 if isinstance(value, int) else None, min_width=160)

    basic = [key for key, spec in FIELDS.items() if not spec.metadata.get("advanced")]
    with gr.Row(equal_height=True):
        for key in basic:
            controls[key] = control(key)
    with gr.Accordion("Advanced (defaults from settings.toml [finetune])", open=False):
        with gr.Row(equal_height=True):
            for key in FIELDS:
                if key not in basic:
                    controls[key] = control(key)
    return controls


def _plan_markdown(plan: dict) -> str:
    """The plan before Start, as markdown."""
    minutes, peak = plan.get("minutes"), plan.get("peak_gib")
    # the run draws batches across epochs: steps = epochs x samples / effective batch, rounded up (recipe.steps_for)
    parts = [f"**Plan:** {plan['train_samples']} training + {counted(plan['val_samples'], 'validation sample')}",
             f"{counted(plan['steps'], 'optimizer step')} ({counted(plan['epochs'], 'epoch')} of "
             f"{counted(plan['train_samples'], 'sample')}, effective batch {plan['effective_batch']})",
             f"learning rate {plan['learning_rate']:g}",
             f"~{minutes:.1f} min ({plan['minutes_how']})" if minutes is not None else "time: shown once running",
             f"peak memory ~{peak:.1f} GiB (longest sample: {plan['longest_sample_tokens']:,} tokens)" if peak else "",
             # what comes after training: the tab did not say (fine-tune reviewer)
             f"then base vs the new adapter on the {counted(plan['val_samples'], 'validation sample')}, for a verdict"
             if plan.get("evaluate_after") else
             f"no verdict afterwards: {counted(plan['val_samples'], 'validation sample')}, a comparison with the base needs "
             f"{plan['evaluate_needs']} (evaluate it in the Evaluate tab on pictures it did not train on)"
             if plan["val_samples"] < plan.get("evaluate_needs", 0) else ""]
    text = " · ".join(part for part in parts if part)
    if plan.get("warning"):
        text += f"  \n⚠️ {html.escape(plan['warning'], quote=False)}"
    if plan.get("reasons"):
        text += "  \n<small>" + "; ".join(f"{k}: {v}" for k, v in plan["reasons"].items()) + "</small>"
    return text


def _check_result(result: dict) -> tuple[str, list]:
    """The report markdown and the preview rows of a dataset check."""
    # Problems quote the user's files (a literal <image>): escaped, as the rest of the tab's markdown that quotes them.
    problems = "\n".join(f"- {html.escape(p, quote=False)}" for p in result["problems"][:30])
    more = f"\n- … and {len(result['problems']) - 30} more" if len(result["problems"]) > 30 else ""
    text = (f"**{html.escape(result['format'], quote=False)}**: {counted(result['samples'], 'usable sample')}, "
            f"{counted(len(result['problems']), 'problem')}."
            + (f"\n\n{problems}{more}" if problems else ""))
    rows = [[r["source"], ", ".join(Path(i).name for i in r["images"]), r["prompt"], r["answer"]]
            for r in result["preview"]]
    return text, rows


def build_finetune_tab(manager: ModelManager, settings: Settings) -> FinetuneActions:
    """Lay out the Fine-tune tab inside the current Blocks and register its API endpoints."""
    actions = FinetuneActions(manager, settings)
    gr.Markdown("Train a LoRA adapter on your own images. Training runs in a separate process: chat keeps "
                "working, and you can close this page and come back.")
    with gr.Row():
        with gr.Column():
            # No file_types: the browser dropped a file of another kind from the box unsaid (as the Evaluate tab's
            # did: blind tester); Check and Start say which kinds are taken (store_upload refuses the others).
            # height: 81 files listed one per row put Check and Start 6,900 px down (reviewer)
            upload = gr.File(label="Dataset upload: pictures with their .txt captions, a .json/.jsonl/.csv file "
                                   "(pick its pictures with it), a .parquet file, or a .zip of either",
                             file_count="multiple", height=240)
            path = gr.Textbox(label="…or a folder, file or .zip on this computer", visible=not settings.server.exposed)
            check = gr.Button("Check dataset")
        with gr.Column():
            report = gr.Markdown(elem_id="vlmchat-finetune-report")
            dataset = gr.Textbox(label="Dataset used", interactive=False)
    preview = gr.Dataframe(headers=["source", "images", "prompt", "answer"], label="First samples",
                           interactive=False, wrap=True)
    with gr.Row():
        name = gr.Textbox(label="Adapter name", placeholder="my-adapter")
        overwrite = gr.Checkbox(label="Overwrite an adapter of the same name", value=False)
        skip_invalid = gr.Checkbox(label="Skip rows with problems", value=False)
    controls = _settings_controls(settings)
    plan_box = gr.Markdown(elem_id="vlmchat-finetune-plan")
    with gr.Row():
        start = gr.Button("Start", variant="primary")
        cancel = gr.Button("Cancel", variant="stop")
        resume = gr.Button("Resume")
    refused = gr.Markdown(elem_id="vlmchat-finetune-said")  # what Start, Cancel or Resume refused, and why
    status = gr.Markdown(elem_id="vlmchat-finetune-status")
    # no fixed height: with one the legend ("train loss", "eval loss") was cut off below the plot (reviewer)
    plot = gr.LinePlot(x="step", y="loss", color="series", label="Loss", x_title="optimizer step",
                       y_title="loss", sort="x")
    with gr.Accordion("Exact config and command of this run", open=False):
        config = gr.Code(language="json", label="job.json")
        command = gr.Code(language="shell", label="The same run from a terminal")
    job_id = gr.State("")
    timer = gr.Timer(2.0)

    def form_options(values) -> dict:
        return {key: _form_value(key, value) for key, value in zip(controls, values)}

    def do_check(request: gr.Request, file, typed, *values):
        try:
            reference = actions.dataset(file, typed, request)
            checked = _check_result(actions.check(reference, request))
        except (VlmchatError, gr.Error) as exc:  # said where the report goes; the last file's report is cleared
            message = html.escape(said(exc), quote=False)  # both show markup: "<image>" in a message is text
            gr.Warning(shown_text(actions.settings, message))  # a toast is no answer: the shared app's filter misses it
            return f"⚠️ {message}", None, "", ""
        return *checked, reference, do_plan(request, reference, *values)

    def do_plan(request: gr.Request, reference, *values):
        if not reference:
            return ""
        try:
            return _plan_markdown(actions.plan(reference, form_options(values), request))
        except (VlmchatError, gr.Error) as exc:  # a value the form refuses (epochs "lots") too: it was a bare badge
            return f"⚠️ {html.escape(said(exc), quote=False)}"

    def told(action, shown: int):
        """`action` for a run button whose `shown` outputs follow the ⚠️ line: a refusal (a dataset with problems, a
        name in use, nothing to resume) is said on that line under the buttons and the run shown below stays as it
        was (it was an Error toast, with the last run's status under it as if the button had started something)."""
        @functools.wraps(action)
        def wrapped(*args, **kwargs):
            try:
                return "", *action(*args, **kwargs)
            except (VlmchatError, gr.Error) as exc:
                return f"⚠️ {html.escape(said(exc), quote=False)}", *[gr.skip()] * shown
        return wrapped

    def do_start(request: gr.Request, reference, file, typed, name, overwrite, skip, *values):
        reference = reference or actions.dataset(file, typed, request)
        options = form_options(values)
        started = actions.start(reference, name, {**options, "skip_invalid": bool(skip)}, overwrite, request)
        return started["job_id"], *refresh(started["job_id"], request)

    def refresh(current, request: gr.Request = None):
        state = actions.status(current, request)
        files = _job_files(actions, state, request)
        return _status_markdown(state), _curves(state), *files

    outputs = [status, plot, config, command]
    check.click(_guard(do_check), [upload, path, *controls.values()], [report, preview, dataset, plan_box],
                api_visibility="undocumented")
    for changed in (upload.change, path.input):  # another dataset picked: Start must not train on the checked one
        changed(lambda: ("", ""), None, [dataset, plan_box], queue=False, api_visibility="undocumented")
    for control in controls.values():  # each value is checked as it is given, not first at Start
        # a text box once it is left or entered, not at each key: each plan reads the dataset again
        for given in ((control.blur, control.submit) if isinstance(control, gr.Textbox) else (control.change,)):
            given(do_plan, [dataset, *controls.values()], plan_box, api_visibility="undocumented", queue=False)
    start.click(told(do_start, len(outputs) + 1),
                [dataset, upload, path, name, overwrite, skip_invalid, *controls.values()],
                [refused, job_id, *outputs], api_visibility="undocumented")
    def do_cancel(current, request: gr.Request = None):
        message = actions.cancel(current, request)
        text, *rest = refresh(current, request)
        return f"{message}  \n{text}", *rest

    def do_resume(current, request: gr.Request = None):
        return refresh(actions.resume(current, request)["job_id"], request)

    cancel.click(told(do_cancel, len(outputs)), job_id, [refused, *outputs], api_visibility="undocumented")
    resume.click(told(do_resume, len(outputs)), job_id, [refused, *outputs], api_visibility="undocumented")
    def tick(current, line, request: gr.Request = None):
        # "already running", said while another page's run went on, goes once none runs (it stayed beside
        # "cancelled" of that run: blind tester)
        stale = "already running" in (line or "") and runner.running_job(actions.jobs_of(request)) is None
        return ("" if stale else gr.skip()), *refresh(current, request)

    timer.tick(_guard(tick), [job_id, refused], [refused, *outputs], api_visibility="undocumented", queue=False)
    def restore(request: gr.Request):
        return actions.last_form(request)

    gr.context.Context.root_block.load(restore, None, [dataset, name], api_visibility="undocumented", queue=False)
    _register_api(actions)
    return actions


def _register_api(actions: FinetuneActions) -> None:
    def finetune_check(dataset: str, request: gr.Request = None) -> dict:
        """Check a dataset ('upload:<id>' from finetune_upload, or a local path): format, count, problems, preview."""
        if not dataset.startswith(PREFIX):
            refuse_server_paths(actions.settings, "training")
        return actions.check(dataset, request)

    def finetune_start(dataset: str, name: str, options: dict | None = None, overwrite: bool = False,
                       request: gr.Request = None) -> dict:
        """Start a fine-tune in a child process; options are [finetune] keys. Returns job_id, command, config."""
        if not dataset.startswith(PREFIX):
            refuse_server_paths(actions.settings, "training")
        return actions.start(dataset, name, options, overwrite, request)

    def finetune_plan(dataset: str, options: dict | None = None, request: gr.Request = None) -> dict:
        """What Start will do: samples (train/validation), steps, epochs, learning rate, minutes, peak GiB, warning."""
        if not dataset.startswith(PREFIX):
            refuse_server_paths(actions.settings, "training")
        return actions.plan(dataset, options, request)

    def finetune_status(job_id: str = "", request: gr.Request = None) -> dict:
        """State, step, losses, eval losses, samples/s, ETA and memory of a job ('' = the running or newest)."""
        return actions.status(job_id, request)

    def finetune_cancel(job_id: str = "", request: gr.Request = None) -> str:
        """Stop a running job after its current step; its last checkpoint is kept for Resume."""
        return actions.cancel(job_id, request)

    def finetune_resume(job_id: str = "", request: gr.Request = None) -> dict:
        """Continue a cancelled, failed or interrupted job from its last checkpoint."""
        return actions.resume(job_id, request)

    for fn in (finetune_check, finetune_plan, finetune_start, finetune_status, finetune_cancel, finetune_resume):
        gr.api(_guard(fn), api_name=fn.__name__, api_description=fn.__doc__)
    upload_endpoint(actions.settings, "finetune_upload",
                    "Upload a dataset (a .zip, or a .json/.jsonl/.csv/.parquet file); returns 'upload:<id>' for "
                    "finetune_start.")
