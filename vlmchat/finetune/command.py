"""`python launch.py finetune --data PATH --name NAME ...`: a fine-tune from the terminal with a progress bar.

The job runs in a child process exactly as from the UI (same job folder, same progress file), so a
run started here shows up in the Fine-tune tab and vice versa. Ctrl-C cancels gracefully (a
checkpoint is kept), and so does the end of this process however it ends (the child watches it);
`--resume` continues the newest job of that adapter name.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import InputError
from .spec import CLI_FLAGS, HYPERPARAMETERS, JobSpec

EXIT_FAILED = 1
EXIT_USER_ERROR = 2


def add_finetune_parser(commands) -> None:
    """Register the `finetune` subcommand and its flags (one per [finetune] setting)."""
    parser = commands.add_parser("finetune", help="train a LoRA adapter on your images (child process, resumable)")
    parser.add_argument("--data", required=True, help="a folder of images with .txt captions or metadata.jsonl/.csv, "
                        "a .zip of either (unpacked into outputs/finetune/uploads/), "
                        "a .json/.jsonl/.csv/.parquet file (ShareGPT, LLaVA, OpenAI messages, caption output; see "
                        "README), or a Hugging Face dataset folder of Parquet files")
    parser.add_argument("--name", help="adapter name: the result goes to adapters/NAME/ (needed to train)")
    parser.add_argument("--check", action="store_true", help="only check the dataset: its format, the usable samples "
                        "and each row's problem, then exit (0: all usable, 1: some rows have problems, 2: none)")
    parser.add_argument("--resume", action="store_true", help="continue the newest job of NAME from its checkpoint")
    parser.add_argument("--write-job", action="store_true", help="write the job folder without starting it and "
                        "print the commands that start it on several machines (--num-processes: GPUs of all of them)")
    fields = {f.name: f for f in dataclasses.fields(JobSpec)}
    for key in CLI_FLAGS:
        spec = fields[key]
        flag, help_text = "--" + key.replace("_", "-"), spec.metadata.get("help", "")
        if key in HYPERPARAMETERS:
            help_text += f" (default: finetune.{key} in settings.toml)"
        if str(spec.type) == "bool":
            action = argparse.BooleanOptionalAction if spec.default is True else "store_true"
            parser.add_argument(flag, action=action, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=_parser_for(spec), default=None, help=help_text,
                                metavar="|".join(spec.metadata["choices"]) if "choices" in spec.metadata else None)


def _parser_for(spec: dataclasses.Field):
    """str -> the field's type ("auto" passes through where the field allows it); JobSpec checks the value."""
    kind = {"int": int, "float": float, "int | str": int, "float | str": float}.get(str(spec.type), str)

    def parse(text: str):
        if spec.metadata.get("auto") and text == "auto":
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'auto or ' if spec.metadata.get('auto') else ''}"
                                             f"a{'n' if kind is int else ''} {kind.__name__}, got {text!r}") from None

    return parse


def build_spec(args: argparse.Namespace, settings) -> JobSpec:
    """The job spec from settings.toml and the flags."""
    from ..models.resolve import resolve_model

    changes = {key: getattr(args, key, None) for key in CLI_FLAGS}
    source = resolve_model(settings.model.id, settings).location
    return JobSpec.from_settings(settings, args.name, args.data, model_source=source, **changes)


def run_finetune(args: argparse.Namespace, settings) -> int:
    """Check the data, start (or resume) the job, show progress until it ends; returns the exit code."""
    from . import runner
    from .datasets import read_dataset
    from .plan import refuse_too_long
    from .uploads import unpacked_zip

    folder = runner.jobs_folder(settings)
    if args.check:
        args.data = unpacked_zip(args.data, settings)
        args.name = args.name or "check"
        report = read_dataset(args.data, build_spec(args, settings).caption_prompt)
        print(report.summary(50))  # one problem a line, also when none is usable (then exit 2)
        _refuse_unusable(report)
        return 1 if report.problems else 0
    if not args.name:
        raise InputError("Give the adapter a name with --name NAME (the result goes to adapters/NAME/); "
                         "--check only checks the dataset.")
    if args.resume and args.write_job:
        raise InputError("--write-job writes a new job; leave out --resume. A written job resumes when its "
                         "commands run again with --resume after job.json.")
    if args.resume:
        job = runner.latest_job(folder, args.name)
        if job is None:
            raise InputError(f"No fine-tune job of '{args.name}' to resume in {folder}; start one without --resume.")
        _say_what_resume_ignores(args, job)
        runner.resume_job(job, alone=cpu_alone(settings), attached=True)
    else:
        args.data = unpacked_zip(args.data, settings)
        spec = build_spec(args, settings)
        spec.refuse_existing_adapter()
        report = read_dataset(spec.data, spec.caption_prompt)
        print(report.summary(10), file=sys.stderr)
        _refuse_unusable(report)
        refuse_too_long(spec, report.require_usable(spec.skip_invalid))
        if args.write_job:
            return print_job_commands(runner.write_job(spec, folder), spec.num_processes)
        job = runner.start_job(spec, folder, alone=cpu_alone(settings), attached=True)
    print(f"job folder: {job}", file=sys.stderr)
    return follow(job)


def _say_what_resume_ignores(args: argparse.Namespace, job) -> None:
    """A warning naming the flags --resume does not apply: the job continues as its job.json says (a --max-steps or
    --no-evaluate given with --resume was silently dropped)."""
    from .spec import JOB_FILE

    started = JobSpec.from_file(job / JOB_FILE)
    ignored = [f"--{'no-' if getattr(args, key) is False else ''}{key.replace('_', '-')}" for key in CLI_FLAGS
               if getattr(args, key, None) is not None and getattr(args, key) != getattr(started, key)]
    given = Path(args.data).expanduser().resolve()
    if given.suffix.lower() != ".zip" and given != Path(started.data).expanduser().resolve():  # a zip: unpacked
        ignored.insert(0, f"--data (the job trains on {started.data})")
    if ignored:
        print(f"vlmchat: warning: --resume continues {job.name} as it was started (its {JOB_FILE}); ignored: "
              f"{', '.join(ignored)}. To train with them, start a new run without --resume (--overwrite replaces an "
              "adapter of the same name).", file=sys.stderr)


def _refuse_unusable(report) -> None:
    """After the report's problems are printed: an error that does not print them again."""
    if not report.samples:
        raise InputError(f"No usable samples in {report.path}: fix the problems listed above.")


def print_job_commands(job, total: int) -> int:
    """Say where the written job is and how each machine starts it; returns the exit code."""
    from .distributed import launch_lines
    from .spec import JOB_FILE

    print(f"job folder: {job} (not started; it must be at this path on every machine, with the dataset, the model "
          "and the adapters folder)", file=sys.stderr)
    print("\n".join(launch_lines(job / JOB_FILE, total)))
    print("# After a stop, the same commands with --resume after job.json continue from the last checkpoint.")
    return 0


def cpu_alone(settings) -> str:
    """Why this terminal fine-tune may use every CPU core ('' when a vlmchat UI answers on the port of a UI of this
    project's outputs folder, or on the settings' port)."""
    import socket

    from ..files import running_uis

    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host
    for port in [*running_uis(settings.paths.resolve("outputs")), settings.server.port]:
        try:  # the mark of a process killed without exiting may outlive it: a port that answers is the proof
            with socket.create_connection((host, port), timeout=0.3):
                return ""
        except OSError:
            continue
    return f"no vlmchat UI answers on {host}:{settings.server.port}, so no chat model shares the CPU"


def follow(job) -> int:
    """Show a progress bar until the job ends; Ctrl-C cancels it gracefully, and so do SIGTERM and SIGHUP (a closed
    terminal, `timeout`, `docker stop`: the training process would go on alone and write the adapter later)."""
    from ..cli import interrupted_exit_code, stop_as_ctrl_c
    from . import runner

    stop_as_ctrl_c()
    bar, cancelled = _Bar(), False
    try:
        status = runner.wait(job, on_update=bar.update)
    except KeyboardInterrupt:
        cancelled = True
        print("\ncancelling (a checkpoint is saved)…", file=sys.stderr)
        runner.cancel_job(job)
        try:
            status = runner.wait(job, on_update=bar.update)
        except KeyboardInterrupt:  # asked again: the job still stops at its next step, saving its checkpoint
            bar.close()
            print(f"vlmchat: the fine-tune stops after its current step and keeps its checkpoint ({job}); continue "
                  "with the same command and --resume.", file=sys.stderr)
            return interrupted_exit_code()
    bar.close()
    if status.state == "done":
        print(f"{status.message}\nmetrics: {status.metrics}")
        if status.learning:
            print(f"vlmchat: warning: {status.learning}", file=sys.stderr)
        if status.evaluation.get("message"):
            print(f"validation split, base vs {status.adapter}: {status.evaluation['message']}")
        return 0
    if status.state == "cancelled":
        print(f"vlmchat: {status.message} Continue with the same command and --resume.", file=sys.stderr)
        return interrupted_exit_code()
    if cancelled and status.state == "interrupted" and not status.checkpoint:
        # Ctrl-C while the training process was still starting: it ended before its first step, as asked (this read
        # "fine-tune interrupted: ... ended without a report" with exit code 1, as a crash reads: blind tester)
        print("vlmchat: fine-tune cancelled before its first step; nothing was trained or saved. Start it again "
              "with the same command.", file=sys.stderr)
        return interrupted_exit_code()
    print(f"vlmchat: fine-tune {status.state}: {status.message}", file=sys.stderr)
    return EXIT_FAILED


class _Bar:
    """A tqdm bar over the optimizer steps (plain lines when tqdm is missing)."""

    def __init__(self):
        self.bar, self.shown_setup, self.shown = None, False, None

    def update(self, status) -> None:
        if status.setup and not self.shown_setup:
            self.shown_setup = True
            reasons = {**status.schedule, **status.setup}  # the auto values, then the machine's choices
            print("\n".join(f"  {k}: {v}" for k, v in reasons.items()), file=sys.stderr)
            if status.warning:
                print(f"vlmchat: warning: {status.warning}", file=sys.stderr)
        if not status.total_steps:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm

                # from the step it is at: a resumed run's first update read as 2,097,152 steps/s, its ETA stuck
                self.bar = tqdm(total=status.total_steps, initial=status.step, unit="step", file=sys.stderr,
                                dynamic_ncols=True)
            except ImportError:
                self.bar = False
        line = status.line()
        # drawn again only when it changed, but for a terminal's clock: each poll wrote the same bar into a log
        # (a stuck run's: a line a second for minutes; blind tester)
        if (status.step, line) == self.shown and not (self.bar and sys.stderr.isatty()):
            return
        self.shown = status.step, line
        if self.bar:
            self.bar.n = status.step
            self.bar.set_postfix_str(line.split(" · ", 2)[-1], refresh=False)
            self.bar.refresh()
        elif status.step:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
