"""What a model loaded on the CPU gets for speed, values unchanged: weight layout and the kernels of a decode step.

A decode step multiplies one row by every weight matrix, a few hundred one-row products per token; which
kernel and which layout run those fastest differs from what suits a prefill or the vision tower, so each
change here is confined to what it helps (`benchmarks/realsize/bench.py`, decode section). The model's
lock lives here too: letting go of it frees the thread's OpenMP workers, which keeps those small kernels fast
when several threads take turns with the model. SmolVLM-256M bf16 decode through the app, all three: 36.7 ->
69.4 tokens/s; SmolVLM-500M 16.5 -> 35.6.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading


def tune_for_cpu(model) -> None:
    """Apply both tunings below to a freshly loaded model (nothing on a GPU)."""
    if model.device.type != "cpu":
        return
    column_major_linears(model)
    one_row_steps_without_onednn(model)


def column_major_linears(model) -> int:
    """On the CPU in float32, keep each linear layer's weight transposed in memory; returns how many were.

    The values and shapes stay; only the storage order changes (a column-major view of the same
    matrix). A decode step is a few hundred one-row matrix products, and the CPU's BLAS reads a
    column-major weight faster for those: SmolVLM-256M decode 22.7 -> 29.0 tokens/s on this 2-core CPU,
    prefill no slower (`benchmarks/realsize/bench.py`, decode section). In bfloat16 it is slower, so
    only float32 weights are touched. Each weight is converted alone, so the peak grows by one layer.
    """
    import torch

    if model.device.type != "cpu":
        return 0
    seen = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (type(module) is torch.nn.Linear and weight.dtype == torch.float32 and weight.dim() == 2
                and weight.is_contiguous() and id(weight) not in seen):
            seen.add(id(weight))
            weight.data = weight.data.t().contiguous().t()
    return len(seen)


def one_row_steps_without_onednn(model) -> bool:
    """In bfloat16, run each one-row, one-token decode step with oneDNN switched off; returns whether it will.

    torch sends bf16 matrix products to oneDNN, which costs ~10-20 us a call more than torch's own
    one-row kernel (and its vocabulary-sized product is 1.4x slower); for two rows and more, and for the
    vision tower's convolutions and a prefill, oneDNN is much faster (a picture's first token 0.58 s with
    it, 5.0 s without). So the switch is flipped only around a step whose input is one token of one row,
    and put back after it, also when the step fails. SmolVLM-256M bf16 decode: 42.8 -> 62.9 tokens/s on
    this 2-core CPU (one thread). The switch is process-wide: the model lock keeps other model work out meanwhile.
    """
    import torch

    if model.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    saved: list[bool] = []

    def before(module, args, kwargs):
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is not None and tokens.shape[0] * tokens.shape[1] == 1 and kwargs.get("pixel_values") is None:
            saved.append(torch.backends.mkldnn.enabled)
            torch.backends.mkldnn.enabled = False

    def after(module, args, kwargs, output):
        if saved:
            torch.backends.mkldnn.enabled = saved.pop()

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True, always_call=True)
    return True


class ModelLock:
    """The model's lock (re-entrant) that, when a thread lets go of it, frees that thread's OpenMP workers.

    torch runs its CPU kernels on an OpenMP team per calling thread, and GNU OpenMP keeps each thread's
    workers while the thread lives. Once more such workers exist than cores (the thread that loaded the
    model, the one that answers Chat, an evaluation's...), it stops letting idle workers spin and wakes
    them by futex instead: every small kernel of a decode step then waits on a wake-up, and SmolVLM-256M
    decoded at 36 instead of 63 tokens/s on this 2-core CPU. All model work holds this lock, so freeing the
    holder's team on its last release leaves the next holder the only team (re-made in ~0.1 ms)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._depth = 0  # held this many times by its owner (only the owner changes it)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._depth += 1
        return got

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            release_thread_pool()
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


def release_thread_pool() -> None:
    """Free the calling thread's OpenMP workers (OpenMP 5's omp_pause_resource_all); a no-op where the
    runtime lacks it or is not the one torch uses."""
    if "torch" not in sys.modules:
        return  # nothing has run a torch kernel yet (and importing torch here would cost seconds)
    pause = _openmp_pause()
    if pause is not None:
        pause(1)  # omp_pause_soft


@functools.lru_cache(maxsize=1)
def _openmp_pause():
    import torch

    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libgomp.so.1", "libiomp5.so", "libomp.so", "libomp.dylib", "libiomp5.dylib"):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        try:
            function = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
        return function
    return getattr(ctypes.CDLL(None), "omp_pause_resource_all", None)  # a runtime torch loaded from elsewhere
