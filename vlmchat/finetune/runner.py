"""Starting, watching, cancelling and resuming fine-tune jobs from the UI or CLI process.

A job is a folder outputs/finetune/<job id>/ holding job.json (the spec), progress.jsonl (written
by the child), log.txt (the child's output), pid, and checkpoints/. Everything the UI shows is
read from that folder, so a reloaded page (or a restarted UI) re-attaches to a running job.
The child is its own process group: Cancel signals the whole group (accelerate's workers too) and
also leaves a `cancel` file, which the child checks after every step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..errors import InputError
from ..settings import PROJECT_ROOT
from .job import ALONE_ENV, CANCEL_FILE, LAUNCHER_ENV
from .progress import FINAL, PROGRESS_FILE, JobStatus, fold_events, read_events
from .spec import JOB_FILE, JobSpec

PID_FILE = "pid"
LOG_FILE = "log.txt"
_children: dict[str, subprocess.Popen] = {}  # jobs started by this process, reaped by `is_alive`


def jobs_folder(settings) -> Path:
    """Where job folders live: <outputs>/finetune."""
    return settings.paths.resolve("outputs") / "finetune"


def child_command(job_dir: Path, num_processes: int = 1, resume: bool = False) -> list[str]:
    """The command that runs a job: python -m vlmchat.finetune, or accelerate launch for N processes."""
    target = ["-m", "vlmchat.finetune", str(Path(job_dir) / JOB_FILE)] + (["--resume"] if resume else [])
    if num_processes <= 1:
        return [sys.executable, *target]
    # --multi_gpu selects accelerate's torchrun launcher; without CUDA the job asks for the CPU and
    # accelerate then joins the processes with the gloo backend.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), *target]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_job_dir(folder: Path, name: str) -> Path:
    """A fresh job folder named after the adapter and the time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for extra in range(100):
        path = Path(folder) / (f"{name}-{stamp}" + (f"-{extra}" if extra else ""))
        if not path.exists():
            path.mkdir(parents=True)
            return path
    raise InputError(f"Could not create a job folder in {folder}.")


def start_job(spec: JobSpec, folder: Path, alone: str = "", attached: bool = False) -> Path:
    """Write job.json into a new job folder and start the child; returns the job folder.

    `alone`: why no UI shares the CPU with this job ("" when one may, as when the UI starts it).
    `attached`: the job stops (keeping a checkpoint) when this process ends, as a terminal's does; the UI's goes on.
    """
    _refuse_running(folder)
    job_dir = write_job(spec, folder)
    _launch(job_dir, spec, resume=False, alone=alone, attached=attached)
    return job_dir


def _refuse_running(folder: Path) -> None:
    """InputError naming the job running in `folder`, its process and how to stop it; nothing when none runs."""
    running = running_job(folder)
    if running is not None:
        pid = _pid(running)
        raise InputError(f"A fine-tune is already running ({running.name}, process {pid}); wait for it, or stop it: "
                         f"Cancel in the Fine-tune tab, or `kill {pid}` (it stops after its current step and keeps a "
                         "checkpoint).")


def write_job(spec: JobSpec, folder: Path) -> Path:
    """A new job folder holding job.json, not started (machines launch it themselves); returns the folder."""
    spec.refuse_existing_adapter()
    job_dir = new_job_dir(folder, spec.name)
    (job_dir / JOB_FILE).write_text(spec.to_json(), encoding="utf-8")
    return job_dir


def resume_job(job_dir: Path, alone: str = "", attached: bool = False) -> Path:
    """Start the child again on an existing job folder, continuing from its last checkpoint, when its dataset is the
    one it started on (`alone`, `attached`: see start_job)."""
    from .datasets import read_dataset
    from .job import refuse_changed_dataset
    from .loop import checkpoints

    job_dir = Path(job_dir)
    if is_alive(job_dir) and not _closed(job_dir):
        raise InputError(f"Job {job_dir.name} is still running.")
    if job_status(job_dir).state == "done":  # the CLI's --resume trained on from a checkpoint, then failed
        raise InputError(f"{job_dir.name} has finished and wrote its adapter; there is nothing to resume. "
                         "Start a new run to train again.")
    if not checkpoints(job_dir):
        raise InputError(f"Job {job_dir.name} has no checkpoint to resume from; start it again instead.")
    _refuse_running(job_dir.parent)
    spec = JobSpec.from_file(job_dir / JOB_FILE)
    refuse_changed_dataset(spec, job_dir, read_dataset(spec.data, spec.caption_prompt).samples)
    (job_dir / CANCEL_FILE).unlink(missing_ok=True)
    _launch(job_dir, spec, resume=True, alone=alone, attached=attached)
    return job_dir


def _started_since(job_dir: Path, events: list[dict]) -> bool:
    """True when the job's process was started after its last event: a resumed run that has not reported yet."""
    try:
        started = json.loads((job_dir / PID_FILE).read_text(encoding="utf-8"))["started"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(events) and started > events[-1].get("time", 0.0)


def _closed(job_dir: Path, wait_s: float = 20.0) -> bool:
    """For a job whose run has ended (its final event written) while its process still closes (it says "cancelled"
    a few seconds before it exits): wait for the exit, so a Resume pressed at once is not refused as running."""
    events = read_events(job_dir / PROGRESS_FILE)
    if fold_events(events, JobStatus()).state not in FINAL:
        return False
    if _started_since(job_dir, events):  # a new run (a Resume pressed twice): it is running
        return False
    deadline = time.monotonic() + wait_s
    while is_alive(job_dir):
        if time.monotonic() > deadline:
            raise InputError(f"Job {job_dir.name} has stopped and is still closing; press Resume again in a moment.")
        time.sleep(0.2)
    return True


def _launch(job_dir: Path, spec: JobSpec, resume: bool, alone: str = "", attached: bool = False) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop(ALONE_ENV, None)
    env.pop(LAUNCHER_ENV, None)
    if alone:
        env[ALONE_ENV] = alone
    if attached:
        env[LAUNCHER_ENV] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if spec.num_processes > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // spec.num_processes))
    command = child_command(job_dir, spec.num_processes, resume)
    with open(job_dir / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _children[str(job_dir.resolve())] = process
    (job_dir / PID_FILE).write_text(json.dumps({"pid": process.pid, "started": time.time()}), encoding="utf-8")


def _pid(job_dir: Path) -> int | None:
    try:
        return int(json.loads((Path(job_dir) / PID_FILE).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError):
        return None


def is_alive(job_dir: Path) -> bool:
    """True while the job's child process runs."""
    job_dir = Path(job_dir)
    child = _children.get(str(job_dir.resolve()))
    if child is not None:
        return child.poll() is None
    pid = _pid(job_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # the pid may have been reused by an unrelated process
        return b"vlmchat.finetune" in cmdline.read_bytes()
    return True


def exit_code(job_dir: Path) -> int | None:
    child = _children.get(str(Path(job_dir).resolve()))
    return child.poll() if child is not None else None


def job_status(job_dir: Path) -> JobStatus:
    """What the job folder says, with 'interrupted' for a child that died without reporting."""
    job_dir = Path(job_dir)
    status = JobStatus(job_id=job_dir.name)
    try:
        status.name = JobSpec.from_file(job_dir / JOB_FILE).name
    except (OSError, ValueError, InputError):
        status.name = job_dir.name
    alive = is_alive(job_dir)  # before reading: a child that has exited has written all its events
    events = read_events(job_dir / PROGRESS_FILE)
    fold_events(events, status)
    if status.state == "none" and alive:
        status.state, status.message = "starting", "Loading the dataset and the model…"
    elif status.state in FINAL and alive and _started_since(job_dir, events):  # it said "cancelled" for ~12 s
        status.state = "starting"
        status.message = f"Resuming from the checkpoint at step {status.step}: loading the dataset and the model…"
    elif status.state in ("none", "running") and not alive:
        code = exit_code(job_dir)
        status.state = "interrupted" if (job_dir / PID_FILE).exists() else "none"
        # after a Cancel the process was ended by it, not "perhaps killed for lack of memory" (blind tester)
        why = (" after Cancel, before it could save a checkpoint" if (job_dir / CANCEL_FILE).exists()
               else " — perhaps killed for lack of memory")
        status.message = (f"The training process ended without a report{f' (exit code {code})' if code else ''}"
                          f"{why}. See log.txt in the job folder"
                          + ("; Resume continues from the last checkpoint." if status.checkpoint else "."))
    elif alive and (job_dir / CANCEL_FILE).exists() and status.active:
        status.message = "Cancelling: the run stops after the current step and saves a checkpoint…"
    return status


def cancel_job(job_dir: Path) -> None:
    """Ask a running job to stop after its current step (it keeps a checkpoint)."""
    job_dir = Path(job_dir)
    (job_dir / CANCEL_FILE).write_text("cancel requested\n", encoding="utf-8")
    pid = _pid(job_dir)
    if pid is not None and is_alive(job_dir):
        try:
            os.killpg(pid, signal.SIGTERM)  # the child leads its own process group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass


def list_jobs(folder: Path) -> list[Path]:
    """Job folders, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    jobs = [p for p in folder.iterdir() if (p / JOB_FILE).is_file()]
    return sorted(jobs, key=lambda p: p.stat().st_mtime, reverse=True)


def running_jobs_under(folder: Path) -> list[tuple[Path, int | None]]:
    """(job folder, process id) of every job running under `folder`, every login's included."""
    folder = Path(folder)
    jobs = [job.parent for job in folder.rglob(JOB_FILE)] if folder.is_dir() else []
    return [(job, _pid(job)) for job in jobs if is_alive(job)]


def running_job(folder: Path) -> Path | None:
    """The job whose child is running now, if any."""
    return next((job for job in list_jobs(folder) if is_alive(job)), None)


def latest_job(folder: Path, name: str | None = None) -> Path | None:
    """The newest job (of adapter `name`, if given): the one a reloaded page shows."""
    for job in list_jobs(folder):
        if name is None or job.name.rsplit("-", 2)[0] == name or _spec_name(job) == name:
            return job
    return None


def _spec_name(job_dir: Path) -> str:
    try:
        return json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8")).get("name", "")
    except (OSError, ValueError):
        return ""


def wait(job_dir: Path, on_update=None, poll_s: float = 1.0, timeout_s: float | None = None) -> JobStatus:
    """Block until the job ends, calling `on_update(status)` after every poll; returns the final status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = job_status(job_dir)
        if on_update:
            on_update(status)
        if not is_alive(job_dir) and not status.active:
            return status
        if deadline and time.monotonic() > deadline:
            return status
        time.sleep(poll_s)
