"""How a fine-tune runs on this machine: precision, QLoRA, gradient checkpointing, optimizer — and why.

`choose_setup` is a pure function (no torch) so every branch is unit-tested. On a GPU it asks the
quantization plan (vlmchat/plan.py) whether the model fits in bf16 with room for training; if not,
QLoRA (4-bit nf4 weights, bf16 compute). When the memory left after the weights is tight, gradient
checkpointing (recompute activations: ~30 % slower, far less memory) and a paged 8-bit AdamW
(optimizer state in 8 bits, paged to RAM under pressure) are switched on. On the CPU QLoRA and the
paged optimizer do not apply (bitsandbytes' 4-bit kernels and paged optimizers need CUDA); gradient
checkpointing is switched on when the run would need more RAM than is available without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Training activations per token where the language model's shape is known (ModelSize.text_shape), fitted on the
# peak RSS of 143-1,204-token LoRA steps (dropout 0.05, float32) of SmolVLM-256M, -500M, Qwen2-VL-2B and two 256M
# variants (intermediate x4, hidden x2) (benchmarks/realsize/activations.py; RESULTS.md): the loss's float32 logits
# ~3.3 rows of the vocabulary, and per layer 24 values per hidden unit + 8 per intermediate one with gradient
# checkpointing off, 5 + 4.5 with it on. Within 15% of long steps (the same step's peak moves up to 30% run to run).
LOGIT_ROWS = 3.3
LAYER_VALUES = {False: (24, 8), True: (5, 4.5)}
# On a GPU (bf16) checkpointing keeps what it promises: each layer's input, and one layer's activations while it is
# recomputed. Measured on an H200 (benchmarks/realsize/gpu_figures.py, step peak over the loaded model, 1,023 tokens,
# one picture, QLoRA and LoRA alike): Llama-3.2-11B-Vision 2.1 GiB (this gives 2.3), Qwen2.5-VL-7B 2.1 (2.6); the CPU
# fit above gave 8.1 and 7.4. Without checkpointing the fit above holds on the GPU too: 16.9 and 11.6 measured, 17.8
# and 14.6 given.
# Where the shape is unknown: per sample and 1k tokens, as a share of the bf16 weights of a 7B model
# (a ballpark: ~1.5 GiB per 1k tokens for a 7B decoder).
ACTIVATION_GIB_PER_KTOKEN_PER_B = 0.2
FIXED_RUNTIME_GIB = 0.75  # CUDA context, cuBLAS workspace, allocator slack (as in vlmchat/plan.py)
TIGHT_SHARE = 0.15  # less than this share of the free memory left after weights + activations = tight


@dataclass(frozen=True)
class TrainingSetup:
    """The decisions for one run; `reasons` says why each was taken (shown in the UI and CLI)."""

    device: str = "cpu"
    dtype: str = "float32"
    bits: int = 32                      # 4 = QLoRA
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"            # "adamw" | "paged_adamw_8bit"
    threads: int = 0                    # torch CPU threads per process (0 = torch's default)
    reasons: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line per decision."""
        return "\n".join(f"{key}: {value}" for key, value in self.reasons.items())


def choose_setup(*, on_gpu: bool, free_gib: float = 0.0, size=None, quantization: str = "auto",
                 gradient_checkpointing: str = "auto", optimizer: str = "auto", tokens: int = 1024,
                 batch_size: int = 1, bf16: bool = True, bnb: bool = True, device_name: str = "",
                 cpu_cores: int = 2, processes: int = 1, alone: str = "") -> TrainingSetup:
    """Decide precision, QLoRA, checkpointing and optimizer for a run (size: a vlmchat.plan.ModelSize or None).

    `alone`: why no UI shares the CPU ('' = one may: a core is left to it)."""
    if not on_gpu:
        gc, why_gc = cpu_checkpointing(gradient_checkpointing, size, tokens, batch_size, free_gib)
        return _cpu_setup(quantization, (gc, why_gc), optimizer, cpu_cores, processes, alone)
    dtype = "bfloat16" if bf16 else "float16"
    bits, why_bits, need = _choose_bits(size, free_gib, quantization, tokens, batch_size, dtype, bnb, device_name,
                                        gradient_checkpointing != "off")
    activations = activations_gib(size, tokens, batch_size)
    left = free_gib - need - activations - FIXED_RUNTIME_GIB
    tight = size is not None and left < TIGHT_SHARE * free_gib
    where = f"{free_gib:.1f} GiB free, ~{need:.1f} GiB for the weights, ~{activations:.1f} GiB of activations"
    gc, why_gc = _switch(gradient_checkpointing, tight, where, "recomputes activations in the backward pass")
    paged = bnb and (optimizer == "paged_adamw_8bit" or (optimizer == "auto" and tight))
    why_opt = ("paged 8-bit AdamW: " + ("chosen in settings" if optimizer != "auto" else f"memory is tight ({where})")
               if paged else "AdamW: " + ("chosen in settings" if optimizer == "adamw" else
                                          "bitsandbytes is not installed" if not bnb else "memory is not tight"))
    return TrainingSetup("cuda", dtype, bits, gc, "paged_adamw_8bit" if paged else "adamw", reasons={
        "device": f"CUDA GPU{f' {device_name}' if device_name else ''}", "precision": why_bits,
        "gradient checkpointing": why_gc, "optimizer": why_opt})


def cpu_checkpointing(choice: str, size, tokens: int, batch_size: int, free_gib: float) -> tuple[bool, str]:
    """(gradient checkpointing on?, why) for a CPU run with `free_gib` of RAM available: `auto` switches it on
    when the run's peak without it is more than that and checkpointing lowers it (long samples: high image
    detail), since on the CPU it costs a little time (3-28% of a step, benchmarks/RESULTS.md), not much."""
    if choice != "auto":
        return choice == "on", f"{choice} (chosen in settings)"
    if size is None or not free_gib:
        return False, "off: the model's size or the RAM available is unknown, so what it saves cannot be told"
    off = peak_gib(size, on_gpu=False, tokens=tokens, batch_size=batch_size)
    on = peak_gib(size, on_gpu=False, tokens=tokens, batch_size=batch_size, checkpointing=True)
    where = f"~{off:.1f} GiB without it, {free_gib:.1f} GiB of RAM available"
    if off > free_gib and on < off - 0.1:
        return True, f"on: {where}; it needs ~{off - on:.1f} GiB less for a little more time"
    if off - on < 0.1:
        return False, f"off: it would save nothing here ({where}: the peak is loading the weights)"
    return False, f"off: {where} (on would need ~{off - on:.1f} GiB less, a little slower)"


def _cpu_setup(quantization: str, checkpointing: tuple[bool, str], optimizer: str, cores: int,
               processes: int, alone: str = "") -> TrainingSetup:
    gc, why_gc = checkpointing
    # One core stays with the UI and the chat model; and threads that outnumber the free cores spend
    # most of their time waiting for each other (measured: 40x slower steps on a busy 2-core CPU).
    threads = max(1, (cores - (0 if alone else 1)) // max(1, processes))
    return TrainingSetup("cpu", "float32", 32, gc, "adamw", threads, reasons={
        "device": f"CPU (no CUDA GPU visible); {threads} thread(s) per process of {cores} cores, "
                  + (f"all of them: {alone}" if alone else "one core left to the UI and the chat model"),
        "precision": "float32 LoRA: 4-bit QLoRA needs a CUDA GPU" + (
            " (quantization = 4bit in settings is ignored on the CPU)" if quantization == "4bit" else ""),
        "gradient checkpointing": why_gc,
        "optimizer": "AdamW: paged 8-bit optimizers need a CUDA GPU" + (
            " (optimizer = paged_adamw_8bit in settings is ignored on the CPU)" if optimizer == "paged_adamw_8bit" else ""),
    })


def activations_gib(size, tokens: int, batch_size: int, *, value_bytes: int = 2, checkpointing: bool = False) -> float:
    """Training activations (GiB) for `batch_size` samples of `tokens` tokens with the language model's values
    `value_bytes` wide (2: a GPU's bf16, 4: the CPU's float32); 0 when the size is unknown."""
    if size is None:
        return 0.0
    if not size.text_shape:
        return ACTIVATION_GIB_PER_KTOKEN_PER_B * size.language_b * tokens / 1024 * batch_size * value_bytes / 2
    layers, hidden, intermediate, vocabulary = size.text_shape
    per_layer = {on: per_hidden * hidden + per_intermediate * intermediate
                 for on, (per_hidden, per_intermediate) in LAYER_VALUES.items()}
    if checkpointing and value_bytes == 2:  # a GPU's bf16: each layer's input, one layer recomputed (note above)
        values = layers * hidden + per_layer[False]
    else:
        values = layers * per_layer[checkpointing]
    per_token = 4 * LOGIT_ROWS * vocabulary + value_bytes * values
    return per_token * tokens * batch_size / 2**30


def _choose_bits(size, free_gib, quantization, tokens, batch_size, dtype, bnb, device_name, may_checkpoint):
    """(bits, reason, weights GiB) from the quantization plan, with training's activations added (as few as
    gradient checkpointing leaves when it `may_checkpoint`: it is switched on when memory is tight)."""
    if quantization == "4bit":
        if not bnb:
            from ..errors import InputError

            raise InputError("quantization = 4bit needs bitsandbytes; install it (pip install bitsandbytes) "
                             "or set quantization = \"none\".")
        return 4, "QLoRA (4-bit nf4, bf16 compute): chosen in settings", _weights(size, 4, dtype)
    if size is None:
        return 16, f"{dtype} LoRA: model size unknown, so no quantization plan was made", 0.0
    from ..models.plan import plan_quantization

    # Training keeps activations for every layer: reserve them as extra "images" in the plan's budget.
    extra = activations_gib(size, tokens, batch_size, checkpointing=may_checkpoint)
    policy = "none" if quantization == "none" or not bnb else "auto"
    plan = plan_quantization(size, {"cuda:0": max(0.0, free_gib - extra)}, policy, context_tokens=tokens,
                             images=batch_size, device_name=device_name, half_dtype=dtype, bnb_available=bnb)
    if plan.bits < 16 and policy == "auto":
        if not plan.ok:  # the chat plan's refusal speaks of offloading to RAM, which training does not do
            why = (f"QLoRA (4-bit nf4, bf16 compute): nothing fits in {free_gib:.1f} GiB free, not even 4-bit (~"
                   f"{plan.estimate_gib + extra:.1f} GiB with training's activations); it is the least a run can take")
            return 4, why, _weights(size, 4, dtype)
        return 4, f"QLoRA (4-bit nf4, bf16 compute): {dtype} LoRA does not fit — {plan.reason}", _weights(size, 4, dtype)
    return 16, f"{dtype} LoRA — {plan.reason}", _weights(size, 16, dtype)


def peak_gib(size, *, on_gpu: bool, tokens: int, batch_size: int, checkpointing: bool = False,
             bits: int = 16) -> float | None:
    """Rough peak memory of a LoRA run (`bits`-wide weights on a GPU: 16, or 4 for QLoRA; float32 on the CPU;
    + activations + runtime).

    On the CPU the peak is usually the load: float32 weights made from 16-bit files hold the mapped files
    beside them (the chat plan's CPU calibration). Measured peak RSS at low detail, 3 steps of batch 1
    (benchmarks/RESULTS.md): SmolVLM-256M 2.38 GiB, -500M 3.71, Qwen2-VL-2B 14.45; this gives 2.19, 3.60, 13.10.
    At high detail (a sample of ~1,190 tokens) 6.43 and 10.23 GiB measured, 5.90 and 9.53 planned.
    """
    if size is None:
        return None
    from ..models.plan import HEADROOM, estimate

    activations = activations_gib(size, tokens, batch_size, value_bytes=2 if on_gpu else 4, checkpointing=checkpointing)
    if on_gpu:
        return _weights(size, bits, "bfloat16") * (1 + HEADROOM) + activations + FIXED_RUNTIME_GIB
    cpu = estimate(size, 32, "float32", context_tokens=0, images=0, on_cpu=True)
    return max(cpu.load_gib, cpu.weights_gib + cpu.runtime_gib + activations)


def _weights(size, bits: int, dtype: str) -> float:
    if size is None:
        return 0.0
    from ..models.plan import estimate

    return estimate(size, bits, dtype, context_tokens=0, images=0).weights_gib


def _switch(choice: str, tight: bool, where: str, what: str) -> tuple[bool, str]:
    if choice != "auto":
        return choice == "on", f"{choice} (chosen in settings)"
    if tight:
        return True, f"on: memory is tight ({where}); it {what}, ~30 % slower"
    return False, f"off: memory is not tight ({where})"
