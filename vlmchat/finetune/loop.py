"""The training loop of one job, written against accelerate so it runs in 1 or N processes alike.

Every optimizer step: `grad_accumulation` micro-batches (gradients synchronised on the last one
only), clipping, AdamW, the LR schedule. Every `eval_every` steps the validation loss (per answer
token, summed over all processes); every `checkpoint_every` steps a checkpoint in the job folder.
A stop request (signal or cancel file) is agreed on by all processes through accelerate's trigger,
so every process stops after the same step.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections import deque
from pathlib import Path

from ..files import staged_folder
from ..models.families import detail_for
from .batches import BatchPlan, EncodedSamples, micro_batch
from .collate import answer_loss, collate_groups

CHECKPOINTS = "checkpoints"
BEST = "best"
STATE_FILE = "trainer_state.pt"


class Trainer:
    """State of one run: the prepared model and optimizer, the data plan, best eval loss, timings."""

    def __init__(self, accelerator, spec, model, processor, optimizer, schedule, train, val, job_dir: Path,
                 emit, stop_requested):
        self.acc, self.spec, self.model, self.processor = accelerator, spec, model, processor
        self.optimizer, self.schedule, self.job_dir, self.emit = optimizer, schedule, Path(job_dir), emit
        self.stop_requested = stop_requested
        # Pictures at the image detail Chat uses on this machine (`auto`: low on the CPU), so the adapter learns
        # from the image tokens it will answer from; on SmolVLM low is 1 tile instead of 17.
        self.detail = detail_for(spec.image_detail, accelerator.unwrap_model(model), processor)
        self.train = EncodedSamples(train, processor, spec.max_length, self.detail)
        self.val = EncodedSamples(val, processor, spec.max_length, self.detail)
        self.plan = BatchPlan(len(train), spec.batch_size, spec.grad_accumulation, accelerator.num_processes, spec.seed)
        self.total = spec.max_steps or self.plan.steps_for(spec.epochs)
        self.pad_id = processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = processor.tokenizer.eos_token_id or 0
        self.step = 0
        self.best = (math.inf, 0)     # (eval loss, step)
        self.bad_evals = 0
        self.elapsed_before = 0.0     # seconds spent in earlier runs of this job (before a resume)
        self.last_loss = self.last_eval = None
        self.run_started = time.monotonic()

    # ---------------------------------------------------------------- one step

    def _to_device(self, batch: dict) -> dict:
        dtype = getattr(self.acc.unwrap_model(self.model), "dtype", None)
        out = {k: v.to(self.acc.device) for k, v in batch.items()}
        if "pixel_values" in out and out["pixel_values"].is_floating_point() and dtype is not None:
            out["pixel_values"] = out["pixel_values"].to(dtype)
        return out

    def optimizer_step(self) -> float:
        """One optimizer step over `grad_accumulation` micro-batches; returns the mean loss over processes."""
        import torch

        self.model.train()
        total = 0.0
        for micro in range(self.spec.grad_accumulation):
            last = micro == self.spec.grad_accumulation - 1
            batches = micro_batch(self.train, self.plan.indices(self.step, micro, self.acc.process_index),
                                  self.pad_id)
            sync = contextlib.nullcontext() if last else self.acc.no_sync(self.model)
            with sync:
                loss = answer_loss(self.model, [self._to_device(b) for b in batches])[0] / self.spec.grad_accumulation
                self.acc.backward(loss)
            total += loss.detach().float()
        self.acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = self.acc.reduce(torch.as_tensor(total, device=self.acc.device), reduction="mean")
        return float(mean)

    def evaluate(self) -> float | None:
        """Mean loss per answer token over the validation split (None without one)."""
        import torch

        if not len(self.val):
            return None
        self.model.eval()
        sums = torch.zeros(2, device=self.acc.device, dtype=torch.float64)
        size, processes = self.spec.batch_size, self.acc.num_processes
        mine = list(range(self.acc.process_index, len(self.val), processes))
        # Every process runs as many forward passes (DDP syncs buffers and FSDP gathers weights inside them): one
        # with fewer validation samples than another, or none, passes a sample that counts for nothing. It went
        # straight to the sum while the others were in a forward pass, and 4 processes on 12 samples hung.
        padding = None
        with torch.no_grad():
            for start in range(0, math.ceil(math.ceil(len(self.val) / processes) / size) * size, size):
                examples = [e for e in (self.val.get(i) for i in mine[start:start + size]) if e is not None]
                weight = 1.0
                if not examples:
                    padding = padding or next((e for e in map(self.val.get, range(len(self.val))) if e), None)
                    if padding is None:  # no usable sample at all: every process skips alike
                        continue
                    examples, weight = [padding], 0.0
                loss, tokens = answer_loss(self.model, [self._to_device(b) for b in collate_groups(examples, self.pad_id)])
                sums += torch.stack([loss.double() * tokens, tokens.double()]) * weight
        sums = self.acc.reduce(sums, reduction="sum")
        self.model.train()
        return float(sums[0] / sums[1]) if sums[1] > 0 else None

    # ---------------------------------------------------------------- the run

    def run(self) -> str:
        """Train until the last step, early stopping or a stop request; returns 'done', 'early' or 'cancelled'."""
        window: deque = deque(maxlen=20)
        self.run_started = time.monotonic()
        while self.step < self.total:
            tick = time.monotonic()
            loss = self.optimizer_step()
            self.step += 1
            window.append(time.monotonic() - tick)
            self.last_loss = loss
            self._report_step(loss, window)
            if self._due(self.spec.eval_every) or self.step == self.total:
                if self._eval_and_check_patience():
                    self.save_checkpoint()
                    return "early"
            if self._due(self.spec.checkpoint_every) and self.step < self.total:
                self.save_checkpoint()
            if self.stop_requested():
                self.acc.set_trigger()
            if self.acc.check_trigger():
                self.save_checkpoint()
                return "cancelled"
        return "done"

    def duration(self) -> float:
        """Training seconds so far, earlier runs of a resumed job included."""
        return self.elapsed_before + time.monotonic() - self.run_started

    def _due(self, every: int) -> bool:
        return bool(every) and self.step % every == 0

    def _report_step(self, loss: float, window: deque) -> None:
        per_step = sum(window) / len(window)
        self.emit("step", step=self.step, loss=round(loss, 5), epoch=round(self.plan.epoch_at(self.step), 3),
                  lr=self.schedule.get_last_lr()[0], samples_per_s=float(f"{self.plan.samples_per_step / per_step:.4g}"),
                  eta_s=round(per_step * (self.total - self.step), 1), memory_gib=round(memory_gib(), 3))

    def _eval_and_check_patience(self) -> bool:
        """Measure eval loss, keep the best adapter; True when patience has run out."""
        loss = self.evaluate()
        if loss is None:
            return False
        self.last_eval = loss
        self.emit("eval", step=self.step, eval_loss=round(loss, 5))
        if loss < self.best[0]:
            self.best, self.bad_evals = (loss, self.step), 0
            self._save_adapter(self.job_dir / BEST)
            return False
        self.bad_evals += 1
        patience = self.spec.early_stopping_patience
        if patience and self.bad_evals >= patience:
            self.emit("note", message=f"early stopping: no better eval loss in {patience} evaluations "
                                      f"(best {self.best[0]:.4f} at step {self.best[1]})")
            return True
        return False

    # ---------------------------------------------------------------- checkpoints

    def _save_adapter(self, folder: Path) -> None:
        """Save the LoRA weights, gathered from every process, replacing `folder` atomically."""
        from .distributed import full_weights

        self._write_adapter(folder, full_weights(self.acc, self.model))

    def _write_adapter(self, folder: Path, weights: dict, state: dict | None = None) -> None:
        """The main process writes `weights` (a full state dict) as a PEFT adapter, with the trainer `state` if
        given, into `folder` atomically; every process calls it."""
        import torch

        if self.acc.is_main_process:
            with staged_folder(folder, replace=True) as staging:
                self.acc.unwrap_model(self.model).save_pretrained(staging, state_dict=weights)
                if state is not None:
                    torch.save(state, staging / STATE_FILE)
        self.acc.wait_for_everyone()

    def save_checkpoint(self) -> None:
        """Adapter + weights, optimizer, schedule and counters into checkpoints/step-N; only the last K are kept."""
        from .distributed import full_state

        weights, optimizer = full_state(self.acc, self.model, self.optimizer)
        state = {"step": self.step, "weights": weights, "optimizer": optimizer, "schedule": self.schedule.state_dict(),
                 "best": self.best, "bad_evals": self.bad_evals, "elapsed": self.duration(),
                 "last_loss": self.last_loss, "last_eval": self.last_eval}
        folder = self.job_dir / CHECKPOINTS / f"step-{self.step:07d}"
        self._write_adapter(folder, weights, state)
        if self.acc.is_main_process:
            for old in checkpoints(self.job_dir)[:-self.spec.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            self.emit("checkpoint", step=self.step, path=str(folder))
        self.acc.wait_for_everyone()

    def restore(self, folder: Path) -> None:
        """Continue from checkpoint `folder`: weights, optimizer, schedule and counters."""
        import torch

        from .distributed import load_full_state

        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        if "weights" in state:
            load_full_state(self.acc, self.model, self.optimizer, state["weights"], state["optimizer"])
        else:  # written before sharded training: the adapter file holds the weights, the optimizer its own dict
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.acc.unwrap_model(self.model), load_file(folder / "adapter_model.safetensors"))
            self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step, self.best, self.bad_evals = state["step"], tuple(state["best"]), state["bad_evals"]
        self.elapsed_before, self.last_loss, self.last_eval = state["elapsed"], state["last_loss"], state["last_eval"]


def checkpoints(job_dir: Path) -> list[Path]:
    """Complete checkpoints of a job, oldest first."""
    folder = Path(job_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).is_file())


def memory_gib() -> float:
    """Peak memory of this process: GPU memory allocated by torch, else peak resident RAM."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except (ImportError, OSError):
        return 0.0
