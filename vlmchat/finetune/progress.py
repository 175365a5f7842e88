"""The progress file: the child appends one JSON event per line; the UI and CLI read it back.

Events: start, resume, step, eval, checkpoint, note, and exactly one final event per run —
done, failed or cancelled. `read_status` folds the events into a `JobStatus`; a job whose
process is gone without a final event is reported as "interrupted" (killed, power loss).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRESS_FILE = "progress.jsonl"
FINAL = ("done", "failed", "cancelled")


class ProgressWriter:
    """Appends events to progress.jsonl (only the main process writes)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def __call__(self, event: str, **fields) -> None:
        if not self.enabled:
            return
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())


def read_events(path: Path) -> list[dict]:
    """Every complete event in the file (a half-written last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@dataclass
class JobStatus:
    """What the UI and CLI show about one job."""

    job_id: str = ""
    name: str = ""
    state: str = "none"            # none | starting | running | done | failed | cancelled | interrupted
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    eval_loss: float | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    memory_gib: float | None = None
    message: str = ""
    setup: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)        # [(step, loss)]
    eval_losses: list = field(default_factory=list)   # [(step, eval_loss)]
    checkpoint: str = ""
    adapter: str = ""
    metrics: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)      # the auto values' reasons (epochs, batch, learning rate)
    warning: str = ""                                 # e.g. too little training to change anything
    learning: str = ""                                # what a finished run's loss curves say (`learning_note`)
    evaluation: dict = field(default_factory=dict)    # base vs the new adapter on the validation split

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    def line(self) -> str:
        """One line for a progress bar or a status label."""
        parts = [f"{self.state}", f"step {self.step}/{self.total_steps or '?'}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        if self.samples_per_s:
            parts.append(format_rate(self.samples_per_s))
        evaluating = self.evaluation.get("running") and self.active
        if self.eta_s is not None and self.active and not evaluating:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        if self.memory_gib:
            parts.append(f"{self.memory_gib:.2f} GiB")
        if evaluating:
            parts.append(self.evaluation.get("message", ""))
        return " · ".join(parts)


def format_rate(samples_per_s: float) -> str:
    """'12.3 samples/s', or the seconds one sample takes when that is below one a second ('80 s/sample')."""
    if samples_per_s >= 1:
        return f"{samples_per_s:.1f} samples/s"
    return f"{1 / samples_per_s:.3g} s/sample"


def format_seconds(seconds: float) -> str:
    """90 -> '1m30s'."""
    seconds = int(max(0, seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def fold_events(events: list[dict], status: JobStatus) -> JobStatus:
    """Apply events in order to `status` (the latest run after a resume wins)."""
    for e in events:
        kind = e.get("event")
        if kind in ("start", "resume"):
            status.state, status.message = "running", e.get("message", "")
            status.total_steps = e.get("total_steps", status.total_steps)
            status.setup = e.get("setup", status.setup)
            status.schedule, status.warning = e.get("schedule", status.schedule), e.get("schedule_warning", "")
            # a resumed run re-logs from its checkpoint step: drop the later points of the earlier run
            status.losses = [p for p in status.losses if p[0] <= e.get("step", 0)]
            status.eval_losses = [p for p in status.eval_losses if p[0] <= e.get("step", 0)]
        elif kind == "step":
            status.step, status.loss, status.epoch = e["step"], e["loss"], e.get("epoch", 0.0)
            status.samples_per_s, status.eta_s = e.get("samples_per_s"), e.get("eta_s")
            status.memory_gib = e.get("memory_gib")
            status.losses.append((e["step"], e["loss"]))
        elif kind == "eval":
            status.eval_loss = e["eval_loss"]
            status.eval_losses.append((e["step"], e["eval_loss"]))
        elif kind == "checkpoint":
            status.checkpoint = e.get("path", "")
        elif kind == "evaluation":
            status.evaluation = {k: v for k, v in e.items() if k not in ("event", "time")}
        elif kind == "note":
            status.message = e.get("message", "")
        elif kind in FINAL:
            status.state, status.message = kind, e.get("message", "")
            status.adapter, status.metrics = e.get("adapter", ""), e.get("metrics", {})
            status.checkpoint = e.get("checkpoint", status.checkpoint)
            if kind == "done":
                status.learning = learning_note(status.losses, status.eval_losses)
                status.warning = " ".join(filter(None, [status.warning, status.learning]))
    return status


LOW_LOSS = 0.3  # below this a training loss has little left to fall (the answers are ~75% likely per token already)


def _within_noise(first: list[float], last: list[float]) -> bool:
    """Whether the last steps' losses are not significantly lower than the first's (one-sided Welch t-test)."""
    from scipy.stats import ttest_ind

    p = ttest_ind(first, last, equal_var=False, alternative="greater").pvalue
    return not p < 0.05  # nan (no spread at all) is no evidence of a fall either


def learning_note(losses: list, eval_losses: list) -> str:
    """What the loss curves say went wrong in a finished run, or "": a training loss that hardly fell (the
    adapter learned little), or a validation loss that rose well past its lowest point (it memorised).

    The training loss of one step is noisy, so its first and last quarters are compared by their means, and a fall
    no larger than the steps' own noise (Welch's t-test, p >= 0.05) counts as none: 8 steps at a learning rate of
    1e-7, which change nothing, went from 3.91 to 3.26 by the pictures each step drew."""
    values = [loss for _, loss in losses]
    if len(values) >= 8:
        quarter = len(values) // 4
        first, last = sum(values[:quarter]) / quarter, sum(values[-quarter:]) / quarter
        if first > LOW_LOSS and (last >= 0.9 * first or _within_noise(values[:quarter], values[-quarter:])):
            return (f"The training loss hardly fell ({first:.3g} in the first quarter of the steps, {last:.3g} in "
                    "the last, within its step-to-step noise): the adapter has probably learned little. Train for "
                    "more epochs or with a higher learning rate, and check that the answers in the dataset are "
                    "what it should learn.")
    if len(eval_losses) >= 3:
        best_step, best = min(eval_losses, key=lambda point: point[1])
        final = eval_losses[-1][1]
        if final > 1.2 * best and final - best > 0.05:
            return (f"The validation loss rose after step {best_step} ({best:.3g} -> {final:.3g}): the adapter "
                    "began to memorise its training answers. Fewer epochs would likely do better on new pictures.")
    return ""
