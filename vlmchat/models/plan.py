"""The quantization plan: model size + free memory + policy -> dtype, bits, device map, and why.

`plan_quantization` is a pure function (no torch, no GPU) so every branch is unit-tested;
`plan_for_machine` feeds it the memory measured now (`read_free_memory`), and `decide.decide_load`
adds the device and is what the loader, the Model tab and `launch.py plan` show. Parameter counts
come from vlmchat/models/sizes.py. Run `python launch.py plan --model ID --vram-gib 16` to see a plan.

The estimate, per device, in GiB (2**30 bytes):
  weights  = quantized language params * bytes(bits)
             + unquantized params (vision tower, projector, embeddings, lm_head) * bytes(dtype)
  runtime  = KV cache for the context budget + an allowance per image + a fixed allowance
             (CUDA kernels, cuBLAS workspace, allocator slack)
  need     = (weights + runtime) * (1 + HEADROOM)
On the CPU the figures are calibrated against measured peaks (benchmarks/realsize, SmolVLM-256M and
-500M, low and high image detail, all within 7%): the process itself (Python, torch, transformers)
counts, each picture costs a base plus its image tokens' vision activations, loading into float32 from
16-bit files briefly holds the files' bytes beside the converted weights, and need = max(load, answer)
with no headroom on top (the OS reserve is the margin):
  answer   = PROCESS + weights + KV + per picture (CPU_IMAGE_GIB + image tokens * CPU_GIB_PER_IMAGE_TOKEN)
  load     = PROCESS + weights (+ the safetensors files' bytes when widening them to float32)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .families import DEFAULT_UNQUANTIZED
from .sizes import ModelSize

GIB = 2**30
HEADROOM = 0.10             # 10 % on top of the estimate: fragmentation, longer answers, estimate error
FIXED_RUNTIME_GIB = 1.0     # cuBLAS workspace, lazily loaded kernels, allocator slack: paid by every load
IMAGE_GIB = 0.25            # transient vision-encoder activations per image in one prompt
OS_RESERVE_GIB = 2.0        # RAM left to the OS and the UI when weights live in system memory
PROCESS_GIB = 0.76          # CPU: Python + torch + transformers + tokenizer resident before any weights (measured)
CPU_IMAGE_GIB = 0.08        # CPU: per picture besides its tokens (pixels, processor copies), float32
CPU_GIB_PER_IMAGE_TOKEN = 0.71 / 1024  # CPU: vision activations per image token, float32 (1,088 tokens: +0.77 GiB)
DEFAULT_KV_KIB_PER_TOKEN = 128.0  # a 7-8B model with grouped-query attention, when nothing better is known
# Bytes per parameter: nf4 stores 4 bits + one absmax per 64 weights (double-quantized);
# LLM.int8 stores 8 bits + one fp32 scale per row.
BYTES_PER_PARAM = {32: 4.0, 16: 2.0, 8: 1.01, 4: 0.53}
POLICIES = ("auto", "none", "8bit", "4bit")


@dataclass(frozen=True)
class Estimate:
    """Memory one precision needs, in GiB."""

    bits: int
    weights_gib: float
    runtime_gib: float
    headroom: float = HEADROOM
    load_gib: float = 0.0  # the peak while loading, where it can exceed answering (CPU)

    @property
    def need_gib(self) -> float:
        """Weights + runtime with the headroom margin, or the load's peak where that is higher."""
        return max((self.weights_gib + self.runtime_gib) * (1 + self.headroom), self.load_gib)


@dataclass(frozen=True)
class Plan:
    """How to load one model on this machine, and why."""

    model: str
    device: str                       # "cuda:0", "cuda" (several GPUs), "cpu"
    dtype: str                        # compute dtype and dtype of the unquantized parts
    bits: int                         # 4, 8 (bitsandbytes), 16 or 32 (not quantized)
    unquantized: tuple[str, ...]      # module-name patterns bitsandbytes leaves alone
    device_map: str | None            # passed to from_pretrained ("auto" when offloading or several GPUs)
    max_memory: dict | None           # per-device caps for device_map="auto", in GiB
    estimate_gib: float               # what the chosen precision needs, headroom included
    free_gib: float                   # free memory on the device(s) used
    headroom_gib: float               # free - estimate (negative: offloaded or refused)
    offload_gib: float = 0.0          # weights placed in system RAM (only unquantized: bitsandbytes cannot offload)
    ok: bool = True                   # False: refused, nothing fits; `reason` shows the numbers
    warning: str = ""
    reason: str = ""
    alternatives: tuple[tuple[str, float], ...] = ()  # (precision label, need GiB) for each option considered

    @property
    def quantization(self) -> str:
        """'4bit', '8bit' or 'none'."""
        return f"{self.bits}bit" if self.bits in (4, 8) else "none"

    def summary(self) -> str:
        """One line: the choice, then the reason, then the warning if any."""
        label = _label(self.bits, self.dtype)
        head = f"{self.model}: {label} on {self.device}" if self.ok else f"{self.model}: cannot be loaded here"
        return " — ".join(part for part in (head, self.reason, self.warning) if part)

    def to_dict(self) -> dict:
        """JSON-ready fields (for `plan --json` and the UI)."""
        data = dataclasses.asdict(self)
        data["quantization"] = self.quantization
        data["alternatives"] = [{"precision": label, "need_gib": round(need, 2)} for label, need in self.alternatives]
        return data

    def load_kwargs(self, location=None) -> dict:
        """Keyword arguments for `from_pretrained`: dtype, quantization_config, device_map, max_memory.

        `location`: the model's folder (or hub id); an offloaded model then gets its module placement here, the
        vision parts on the GPU (`offload.offload_device_map`), not accelerate's "auto" alone."""
        import torch

        dtype = getattr(torch, self.dtype)
        kwargs: dict = {"dtype": dtype, "device_map": self.device_map}
        if self.max_memory and self.offload_gib > 0 and location is not None:
            from transformers import AutoConfig

            from .offload import offload_device_map

            kwargs["device_map"] = offload_device_map(AutoConfig.from_pretrained(location), dtype, self.max_memory)
        elif self.max_memory:
            kwargs["max_memory"] = {key: f"{value:.2f}GiB" for key, value in self.max_memory.items()}
        if self.bits in (4, 8):
            from transformers import BitsAndBytesConfig

            if self.offload_gib > 0 or (self.max_memory and "cpu" in self.max_memory):
                # bitsandbytes cannot load a quantized model with part of it in system RAM (issue #1525): the
                # plan offloads only unquantized models, so this is a plan edited by hand.
                raise ValueError(f"a {self.bits}-bit model cannot be offloaded to system RAM; offload it unquantized.")
            common = {"llm_int8_skip_modules": list(self.unquantized)}
            if self.bits == 8:
                kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, **common)
            else:
                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                    bnb_4bit_use_double_quant=True, **common)
        return kwargs


def _label(bits: int, dtype: str) -> str:
    if bits in (4, 8):
        return f"{bits}-bit"
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "float32"}.get(dtype, dtype)


def estimate(size: ModelSize, bits: int, dtype: str = "bfloat16", context_tokens: int = 4096,
             images: int = 1, picture_tokens: int | None = None, on_cpu: bool = False) -> Estimate:
    """Memory for `size` with the language model at `bits` and everything else in `dtype`.

    `picture_tokens`: image tokens per picture at the image detail used (None: unknown); on_cpu: the
    CPU calibration (see the module's docstring).
    """
    dtype_bytes = 4.0 if dtype == "float32" else 2.0
    if bits in (4, 8):
        quantized = size.language_b - size.embeddings_b
        kept = size.vision_b + size.embeddings_b
        weights = quantized * BYTES_PER_PARAM[bits] + kept * dtype_bytes
    else:
        weights = size.total_b * dtype_bytes
    weights_gib = weights * 1e9 / GIB
    kv_kib = size.kv_kib_per_token or DEFAULT_KV_KIB_PER_TOKEN * min(1.0, size.language_b / 8)
    kv_gib = context_tokens * kv_kib * (dtype_bytes / 2) / 2**20
    if not on_cpu:
        return Estimate(bits, weights_gib, kv_gib + images * IMAGE_GIB + FIXED_RUNTIME_GIB)
    picture = IMAGE_GIB if picture_tokens is None else \
        (CPU_IMAGE_GIB + picture_tokens * CPU_GIB_PER_IMAGE_TOKEN) * dtype_bytes / 4
    files = size.file_gib or size.total_b * 2e9 / GIB  # unknown: 16-bit files, as hubs ship them
    # Loading into a wider dtype than the files' holds the mapped files beside the converted weights;
    # in the files' own dtype the weights stay mapped from them (measured: +0.5 GiB for 0.95 GiB of bf16).
    widened = bits not in (4, 8) and weights_gib > files * 1.01
    return Estimate(bits, weights_gib, PROCESS_GIB + kv_gib + images * picture, headroom=0.0,
                    load_gib=PROCESS_GIB + weights_gib + (files if widened else 0.0))


def plan_quantization(size: ModelSize, free_gib: Mapping[str, float], policy: str = "auto", *,
                      context_tokens: int = 4096, images: int = 1, picture_tokens: int | None = None,
                      on_cpu: bool | None = None, unquantized: Sequence[str] = DEFAULT_UNQUANTIZED, device_name: str = "",
                      half_dtype: str = "bfloat16", dtype: str | None = None,
                      bnb_available: bool = True, cpu_bf16: bool = False) -> Plan:
    """The plan for loading `size` given free memory per device ("cuda:0", ..., "cpu") and a policy.

    policy: auto (largest precision that fits, bf16 > 8-bit > 4-bit) | none | 8bit | 4bit (forced).
    When nothing fits the GPU(s), auto and none offload the model unquantized (its 16-bit dtype, float32 where
    that is the dtype) with the layers that do not fit in system RAM (device_map="auto" + max_memory, no
    bitsandbytes: a 4-bit or 8-bit model with layers in RAM does not load, bitsandbytes issue #1525), and a
    forced 8bit/4bit that does not fit is refused with what to do; so is an offload that RAM cannot hold.
    on_cpu: run on the CPU (default: when `free_gib` names no GPU); no bitsandbytes there unless forced.
    picture_tokens: image tokens of one picture at the image detail used (the CPU estimate counts them).
    dtype: a dtype chosen in settings (None = auto: `half_dtype` on GPU; on the CPU bfloat16 for 16-bit
    files where `cpu_bf16` (the CPU computes bfloat16 natively, `cpu_computes_bf16`), else float32).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)} (got {policy!r}).")
    gpus = {key: float(value) for key, value in free_gib.items() if key != "cpu"}
    ram = float(free_gib.get("cpu", 0.0))
    if on_cpu is None:
        on_cpu = not gpus
    common = dict(size=size, policy=policy, context_tokens=context_tokens, images=images,
                  unquantized=tuple(unquantized), device_name=device_name)
    if on_cpu or not gpus:
        return _plan_cpu(ram=ram, dtype=dtype, picture_tokens=picture_tokens, cpu_bf16=cpu_bf16, **common)
    return _plan_gpu(gpus=gpus, ram=ram, dtype=dtype or half_dtype, bnb_available=bnb_available, **common)


def _options(policy: str, full_bits: int, bnb_available: bool) -> list[int]:
    if policy == "none":
        return [full_bits]
    if policy in ("8bit", "4bit"):
        return [int(policy[0])]
    return [full_bits, 8, 4] if bnb_available else [full_bits]


def _where(device_name: str, free: float, on: str) -> str:
    return f"{device_name + ', ' if device_name else ''}{free:.1f} GiB free{on}"


def _plan_gpu(*, size, policy, context_tokens, images, unquantized, device_name, gpus, ram, dtype,
              bnb_available) -> Plan:
    free = sum(gpus.values())
    device = next(iter(gpus)) if len(gpus) == 1 else "cuda"
    options = _options(policy, 16 if dtype != "float32" else 32, bnb_available)
    estimates = [estimate(size, bits, dtype, context_tokens, images) for bits in options]
    alternatives = tuple((_label(e.bits, dtype), e.need_gib) for e in estimates)
    where = _where(device_name, free, "")
    steps = []
    for est in estimates:
        label = _label(est.bits, dtype)
        with_headroom = " with headroom" if not steps else ""
        steps.append(f"{label} needs ~{est.need_gib:.1f} GiB{with_headroom}")
        if est.need_gib <= free:
            chosen = "policy" if policy != "auto" else "auto"
            why = f"{where}: {size.name} in {'; '.join(steps)} -> {label}"
            if chosen == "policy":
                why += f" (quantization = {policy} chosen)"  # in settings, the Model tab or --quantization
            device_map = device if len(gpus) == 1 else "auto"
            max_memory = None if len(gpus) == 1 else {key: value for key, value in _gpu_indexes(gpus).items()}
            return Plan(size.name, device, dtype, est.bits, unquantized if est.bits < 16 else (), device_map,
                        max_memory, round(est.need_gib, 2), free, round(free - est.need_gib, 2),
                        reason=why, alternatives=alternatives)
    # Nothing fits on the GPU(s). Offloading part of a bitsandbytes-quantized model to system RAM does not
    # load (transformers 5 / accelerate 1.16 / bitsandbytes 0.50, measured on an H200 with Llama-3.2-11B-Vision,
    # Qwen2.5-VL-7B and Chameleon-7B: accelerate's dispatch calls Linear4bit's state_dict on meta weights,
    # "Tensor.item() cannot be called on meta tensors"; bitsandbytes issue #1525), so an offloaded model is
    # the unquantized one (accelerate's big-model inference), and a forced 4bit/8bit that does not fit is refused.
    compact = estimates[-1]
    full_bits = 16 if dtype != "float32" else 32
    full = estimates[0] if estimates[0].bits == full_bits else estimate(size, full_bits, dtype, context_tokens, images)
    full_label = _label(full_bits, dtype)
    ram_need = (full.need_gib - free) / (1 + HEADROOM)  # = the weights that do not fit beside the runtime
    gpu_for_weights = free / (1 + HEADROOM) - full.runtime_gib
    summary = f"{where}: {size.name} in {'; '.join(steps)}"
    too_small = gpu_for_weights < 1.0  # the context and activations alone fill it: layers in RAM cannot help
    no_ram = ram_need > ram - OS_RESERVE_GIB

    def refuse(why: str) -> Plan:
        # A refusal keeps the most compact precision considered (the fine-tune setup reads it); nothing is offloaded.
        return Plan(size.name, device, dtype, compact.bits, unquantized if compact.bits < 16 else (), None, None,
                    round(compact.need_gib, 2), free, round(free - compact.need_gib, 2), ok=False, reason=why,
                    alternatives=alternatives)

    if policy in ("8bit", "4bit"):  # chosen in settings, the Model tab or --quantization: not changed here
        if policy == "8bit" and bnb_available:
            smaller = estimate(size, 4, dtype, context_tokens, images)
            if smaller.need_gib <= free:
                return refuse(f"{summary}: it does not fit (quantization = 8bit chosen), and 4-bit does (~"
                              f"{smaller.need_gib:.1f} GiB with headroom): set quantization to 4bit or auto.")
        blocked = ""
        if too_small:
            blocked = (f" (offloading layers to system RAM would not help: {free:.1f} GiB of GPU memory does not "
                       f"hold even the context and activations, ~{full.runtime_gib:.1f} GiB)")
        elif no_ram:
            blocked = (f" (offloading unquantized layers would need ~{ram_need:.1f} GiB of system RAM for "
                       f"{full_label} layers; {ram:.1f} GiB free, {OS_RESERVE_GIB:.0f} GiB kept for the system)")
        advice = (f"Free GPU memory, use a smaller model, or lower the context budget or the pictures{blocked}."
                  if blocked else
                  f"Set quantization to auto or none to offload unquantized layers to system RAM ({full_label}, "
                  f"~{ram_need:.1f} GiB there; answers several times slower), or free GPU memory, use a smaller "
                  "model, or lower the context budget.")
        return refuse(f"{summary}: it does not fit (quantization = {policy} chosen), and {_BNB_NO_OFFLOAD}. "
                      + advice)
    if too_small:
        return refuse(f"{summary}: nothing fits, and {free:.1f} GiB of GPU memory does not hold even the context and "
                      f"activations (~{full.runtime_gib:.1f} GiB) beside a few layers, so offloading weights to "
                      "system RAM cannot help. Lower the context budget or the pictures, free GPU memory, or use a "
                      "smaller model.")
    if no_ram:
        return refuse(f"{summary}: nothing fits, and offloading ~{ram_need:.1f} GiB of {full_label} layers to system "
                      f"RAM ({ram:.1f} GiB free, {OS_RESERVE_GIB:.0f} GiB kept for the system) is not possible "
                      f"either{_why_unquantized(policy, bnb_available, refused=True)}. Use a smaller model, free "
                      "GPU memory or RAM, or lower the context budget.")
    max_memory = {**_gpu_indexes({k: v * gpu_for_weights / free for k, v in gpus.items()}),
                  "cpu": max(ram - OS_RESERVE_GIB, ram_need)}
    why = (f"{summary}: nothing fits -> {full_label} with part of the layers offloaded to system RAM"
           f"{_why_unquantized(policy, bnb_available)}. " + _offload_account(full, full_label, free, gpu_for_weights))
    even = " even in 4-bit" if compact.bits == 4 else f" in {full_label}"
    warning = (f"{size.name} does not fit in {free:.1f} GiB{even}: ~{ram_need:.1f} GiB of its {full_label} layers "
               "run from system RAM, which makes answers several times slower. A smaller model or a larger GPU "
               "avoids this.")
    return Plan(size.name, device, dtype, full_bits, (), "auto", max_memory, round(full.need_gib, 2), free,
                round(free - full.need_gib, 2), offload_gib=round(ram_need, 2), warning=warning, reason=why,
                alternatives=alternatives)


_BNB_NO_OFFLOAD = ("bitsandbytes cannot load a 4-bit or 8-bit model with part of it in system RAM "
                   "(4-bit CPU offload fails: bitsandbytes issue #1525)")


def _why_unquantized(policy: str, bnb_available: bool, refused: bool = False) -> str:
    """Why an offloaded model is not 4-bit or 8-bit, as a clause for the reason."""
    if policy == "none":
        return " (quantization = none chosen)"
    if not bnb_available:
        return " (bitsandbytes is not installed: no 4-bit or 8-bit)"
    if refused:
        return f": an offloaded model runs unquantized, as {_BNB_NO_OFFLOAD}"
    return f", not quantized: {_BNB_NO_OFFLOAD}, so an offloaded model runs unquantized"


def _offload_account(est: Estimate, label: str, free: float, gpu_weights: float) -> str:
    """Where an offloaded model's memory goes, in numbers that add up as printed (each rounded to 0.1 GiB)."""
    gpu_weights, runtime, weights = round(gpu_weights, 1), round(est.runtime_gib, 1), round(est.weights_gib, 1)
    ram = round(weights - gpu_weights, 1)
    return (f"Of the {weights:.1f} GiB of {label} weights, {ram:.1f} GiB go to system RAM and {gpu_weights:.1f} GiB to "
            f"the GPU, which holds {gpu_weights + runtime:.1f} GiB ({gpu_weights:.1f} GiB of weights + {runtime:.1f} "
            f"GiB for the context, images and CUDA: the {free:.1f} GiB free less {HEADROOM:.0%} headroom)")


def _gpu_indexes(gpus: Mapping[str, float]) -> dict:
    """{"cuda:1": 10.0} -> {1: 10.0}: the keys accelerate's max_memory expects."""
    return {int(key.split(":")[1]) if ":" in key else 0: round(value, 2) for key, value in gpus.items()}


def _plan_cpu(*, size, policy, context_tokens, images, picture_tokens, unquantized, device_name, ram, dtype,
              cpu_bf16) -> Plan:
    usable = ram - OS_RESERVE_GIB
    where = _where(device_name or "CPU", ram, " RAM")
    if policy in ("8bit", "4bit"):
        bits, plan_dtype = int(policy[0]), dtype or "bfloat16"
        est = estimate(size, bits, plan_dtype, context_tokens, images, picture_tokens, on_cpu=True)
        alternatives = ((_label(bits, plan_dtype), est.need_gib),)
        label = _label(bits, plan_dtype)
        if est.need_gib > usable:
            return Plan(size.name, "cpu", plan_dtype, bits, unquantized, None, None, round(est.need_gib, 2), ram,
                        round(usable - est.need_gib, 2), ok=False, alternatives=alternatives,
                        reason=f"{where} ({OS_RESERVE_GIB:.0f} GiB kept for the system): {size.name} in {label} "
                               f"needs ~{est.need_gib:.1f} GiB. Use a smaller model.")
        return Plan(size.name, "cpu", plan_dtype, bits, unquantized, "cpu", None, round(est.need_gib, 2), ram,
                    round(usable - est.need_gib, 2), alternatives=alternatives,
                    warning="bitsandbytes on the CPU is much slower than on a GPU.",
                    reason=f"{where}: {size.name} in {label} needs ~{est.need_gib:.1f} GiB -> {label} "
                           f"(quantization = {policy} chosen)")
    # No bitsandbytes on the CPU unless forced. 16-bit files on a CPU that computes bfloat16 natively stay
    # bfloat16 (faster and half the memory); otherwise float32 (fast, exact) if it fits, else bfloat16.
    native = not dtype and cpu_bf16 and _sixteen_bit_files(size)
    dtypes = [dtype] if dtype else ["bfloat16"] if native else ["float32", "bfloat16"]
    estimates = [estimate(size, 32 if d == "float32" else 16, d, context_tokens, images, picture_tokens, on_cpu=True)
                 for d in dtypes]
    alternatives = tuple((_label(e.bits, d), e.need_gib) for e, d in zip(estimates, dtypes))
    steps = []
    for est, plan_dtype in zip(estimates, dtypes):
        label = _label(est.bits, plan_dtype)
        steps.append(f"{label} needs ~{est.need_gib:.1f} GiB")
        if est.need_gib <= usable:
            return Plan(size.name, "cpu", plan_dtype, est.bits, (), None, None, round(est.need_gib, 2), ram,
                        round(usable - est.need_gib, 2), alternatives=alternatives,
                        reason=f"{where}: {size.name} in {'; '.join(steps)} -> {label} on CPU "
                               f"({_cpu_dtype_why(native, cpu_bf16, plan_dtype)}"
                               "no bitsandbytes on the CPU unless quantization is set to 8bit or 4bit)")
    est = estimates[-1]
    # the advice with its number: the tab advised 4-bit without its need (outside reviewer)
    four = estimate(size, 4, "bfloat16", context_tokens, images, picture_tokens, on_cpu=True).need_gib
    advice = (f"Use a smaller model, or force quantization = 4bit: ~{four:.1f} GiB, slow on a CPU" if four <= usable
              else f"Even 4-bit needs ~{four:.1f} GiB: use a smaller model")
    return Plan(size.name, "cpu", dtypes[-1], est.bits, (), None, None, round(est.need_gib, 2), ram,
                round(usable - est.need_gib, 2), ok=False, alternatives=alternatives,
                reason=f"{where} ({OS_RESERVE_GIB:.0f} GiB kept for the system): {size.name} in {'; '.join(steps)}: "
                       f"it does not fit. {advice}.")


CPU_BF16_WHY = "bfloat16 is native on this CPU (avx512_bf16 or amx_bf16): about twice float32's speed, half its memory; "


def _cpu_dtype_why(native: bool, cpu_bf16: bool, dtype: str) -> str:
    if native:
        return CPU_BF16_WHY
    if dtype != "float32":
        return ""
    return "the weight files are float32; " if cpu_bf16 else "half precision is slow there; "


def _sixteen_bit_files(size: ModelSize) -> bool:
    """The weight files hold 16-bit tensors (unknown file sizes: yes, as hubs ship them)."""
    return not size.file_gib or size.file_gib * GIB < size.total_b * 1e9 * 3


def cpu_computes_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU has bfloat16 instructions torch's CPU kernels use (x86 avx512_bf16 or amx_bf16).

    `cpuinfo`: the text of /proc/cpuinfo (read when None; another OS answers False, the float32 default).
    Measured on a 2-core AMD EPYC with avx512_bf16, SmolVLM-256M with one picture: first token 626 vs
    1,328 ms, decode 38.4 vs 28.9 tokens/s against float32.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                cpuinfo = file.read(1 << 20)
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def article(number: str) -> str:
    """"a" or "an" before a number as it is spoken: an 8, an 11, an 18, an 80; a 6, a 16, a 24."""
    whole = number.split(".")[0].lstrip("0") or "0"
    eleven_or_eighteen = len(whole) % 3 == 2 and whole[:2] in ("11", "18")
    return "an" if whole.startswith("8") or eleven_or_eighteen else "a"


@dataclass(frozen=True)
class DeviceMemory:
    """Free and total memory of one device, in GiB."""

    device: str
    name: str
    free_gib: float
    total_gib: float


def read_free_memory(gpus: bool = True) -> dict[str, DeviceMemory]:
    """Free memory per device now: every visible CUDA GPU (torch.cuda.mem_get_info) and system RAM."""
    found: dict[str, DeviceMemory] = {}
    if gpus:
        try:
            import torch

            if torch.cuda.is_available():
                for index in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(index)
                    found[f"cuda:{index}"] = DeviceMemory(f"cuda:{index}", torch.cuda.get_device_name(index),
                                                          free / GIB, total / GIB)
        except ImportError:
            pass
    available, total = _system_ram()
    found["cpu"] = DeviceMemory("cpu", "system RAM", available / GIB, total / GIB)
    return found


def _system_ram() -> tuple[int, int]:
    """(available, total) bytes of system RAM."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return memory.available, memory.total
    except ImportError:
        pass
    try:
        fields = {}
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) * 1024
        return fields.get("MemAvailable", fields.get("MemFree", 0)), fields.get("MemTotal", 0)
    except (OSError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return pages // 2, pages


def bnb_available() -> bool:
    """True when bitsandbytes is installed (checked without importing it)."""
    from importlib.util import find_spec

    return find_spec("bitsandbytes") is not None


def plan_for_machine(size: ModelSize, policy: str = "auto", *, device: str = "auto", dtype: str = "auto",
                     vram_gib: float | None = None, unquantized: Sequence[str] = DEFAULT_UNQUANTIZED,
                     context_tokens: int = 4096, images: int = 1, picture_tokens: int | None = None) -> Plan:
    """The plan for `size` on this machine, or on one GPU with `vram_gib` GiB free (a what-if)."""
    forced_dtype = None if dtype == "auto" else dtype
    memory = read_free_memory(gpus=vram_gib is None and device in ("auto", "cuda"))
    free = {key: value.free_gib for key, value in memory.items()}
    gpu_names = sorted({value.name for key, value in memory.items() if key != "cpu"})
    device_name, half = ", ".join(gpu_names), "bfloat16"
    if vram_gib is not None:
        free = {"cuda:0": float(vram_gib), "cpu": free["cpu"]}
        device_name = f"{article(f'{vram_gib:g}')} {vram_gib:g} GiB GPU"
    elif gpu_names:
        import torch

        half = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    on_cpu = device in ("cpu", "mps") or len(free) == 1
    if device == "mps":
        forced_dtype = forced_dtype or "float16"
    plan = plan_quantization(size, free, policy, context_tokens=context_tokens, images=images,
                             picture_tokens=picture_tokens, on_cpu=on_cpu,
                             unquantized=unquantized, device_name=device_name, half_dtype=half,
                             dtype=forced_dtype, bnb_available=bnb_available(),
                             cpu_bf16=device in ("auto", "cpu") and cpu_computes_bf16())
    if device == "mps":
        plan = dataclasses.replace(plan, device="mps", device_map="mps" if plan.ok else None,
                                   reason=plan.reason.replace("RAM", "unified memory (Apple MPS)"))
    return plan
