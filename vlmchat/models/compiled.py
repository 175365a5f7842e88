"""On a CUDA GPU, a one-row answer from the base model decodes with a fixed-size KV cache and a compiled step.

With the dynamic cache each token is hundreds of small kernels launched from Python, and on a large GPU
the launches, not the weights' reads, set the pace. Through the app on an H200 (Chat's stream,
`benchmarks/realsize/gpu_figures.py --only compiled`, random weights from the published config),
Qwen2.5-VL-7B decoded 54 tokens/s after a 402-token prompt and 15 after a 1,192-token one with the
dynamic cache; compiled, 107-116 at both lengths. `generate` compiles its one-token step (torch.compile,
CUDA graphs) when the cache is static. A static cache has a fixed length and the compiled step is made
for that length, so the length is rounded up to a multiple of `STEP`: every answer up to it reuses the one
compiled step, where a length per answer would compile again (~20-30 s) each turn.

The first answer after a load (and the first past a multiple of `STEP` tokens) pays the compile (30 s for
the 7B); it is made by a three-token answer to the same conversation, so a failure to compile is found
there: that answer goes on with the dynamic cache and, once it has worked (so the failure was the
compile's, not an out-of-memory picture's), compiling is off for the model, said once. Attaching or
detaching an adapter changes the traced layers: the next base answer compiles again (13 s measured).

Only model classes measured to compile through the app are compiled (`COMPILES`): Llama-3.2-11B-Vision
(Mllama) and Chameleon-7B failed inside torch.compile with an AssertionError after 110 s and 38 s of
trying (torch 2.11 on the H200; the same Mllama compiled in a direct `generate` the run before, so the
cause is in how the app calls it and is not found yet), and a first answer that waits that long for
nothing is worse than the dynamic cache. Not used either, each with the reason it gives: an answer of
fewer than MIN_NEW_TOKENS new tokens (an eval's one-token answer), on the CPU
or Apple GPUs (no CUDA graphs; a static cache is slower there), for several rows or beams (a compile
per shape and a cache per row), under an adapter (a compile per adapter), for bitsandbytes-quantized
models (not compilable), with layers offloaded to RAM, or when the cache would not fit in what the GPU
has free.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import named

STEP = 4096  # cache lengths are multiples of this many tokens
MIN_NEW_TOKENS = 16  # shorter answers (an eval's one-token answer) decode too little to be worth a compile
COMPILES = frozenset({"Qwen2_5_VLForConditionalGeneration"})  # measured to compile through the app (above)


@dataclass(frozen=True)
class DecodePlan:
    """How one batch decodes: `kwargs` for generate (empty: the dynamic cache) and why."""

    kwargs: dict
    reason: str

    @property
    def compiled(self) -> bool:
        return bool(self.kwargs)


def cache_length(needed: int, limit: int | None) -> int:
    """`needed` tokens rounded up to a multiple of STEP, at most the model's context (`limit`)."""
    length = -(-max(needed, 1) // STEP) * STEP
    return min(length, limit) if limit else length


def cache_bytes(model, length: int, rows: int = 1) -> int:
    """Bytes of a static KV cache of `length` tokens: keys and values of every layer at the model's dtype."""
    config = model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", 1)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or getattr(text, "hidden_size", heads) // heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim * length * rows * model.dtype.itemsize


def _base(model):
    return getattr(model, "get_base_model", lambda: model)()


def plan(model, setting: str, rows: int, needed: int, adapter: str | None, limit: int | None,
         device_type: str | None = None, free_bytes: int | None = None) -> DecodePlan:
    """The decode of a batch of `rows` (batch x beams) answers needing `needed` positions (prompt + new tokens).

    `device_type` and `free_bytes` (what the GPU has free): None = the model's device, asked of torch."""
    base = _base(model)
    device = model.device
    if setting == "off":
        return DecodePlan({}, "compile is off in settings")
    if (device_type or device.type) != "cuda":
        return DecodePlan({}, "not on a CUDA GPU")
    if rows != 1:
        return DecodePlan({}, f"{rows} rows (batch x beams): only a one-row answer is compiled")
    if adapter is not None:
        return DecodePlan({}, "an adapter answers: only the base model is compiled")
    if getattr(base, "hf_quantizer", None) is not None and not base.hf_quantizer.is_compileable:
        return DecodePlan({}, "quantized weights that torch cannot compile")
    placed = set(getattr(base, "hf_device_map", {}).values())
    if "cpu" in placed or "disk" in placed:
        return DecodePlan({}, "layers offloaded to RAM")
    if type(base).__name__ not in COMPILES:
        return DecodePlan({}, f"{type(base).__name__} is not among the models measured to compile")
    length = cache_length(needed, limit)
    if length < needed:
        return DecodePlan({}, "the answer would run past the model's context")
    # transformers keeps the longest static cache it made for this model and makes every later one that long
    size = cache_bytes(base, max(length, getattr(base, "_previous_max_cache_length", 0)))
    if free_bytes is None:
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        free_bytes = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if free_bytes < 2 * size:
        return DecodePlan({}, f"a {length:,}-token cache ({size / 2**30:.1f} GiB) needs twice that free on the GPU")
    return DecodePlan({"cache_implementation": "static", "max_cache_len": length},
                      f"static {length:,}-token cache, compiled step")


def load_note(model, setting: str, limit: int | None, **where) -> str:
    """What the loaded model's summary says when Chat's answers will be compiled ("" when not), so that the first
    answer's wait is not a surprise. `where`: `plan`'s device_type / free_bytes."""
    found = plan(model, setting, 1, min(STEP, limit or STEP), None, limit, **where)
    return ("; Chat's first answer compiles the decode step (~30 s, once; then about twice the tokens a second; "
            "[model] compile = \"off\" skips it)") if found.compiled else ""


class Compiled:
    """Per loaded model and set of attached adapters (attaching one changes the traced layers; the manager
    makes a new one then): which cache lengths have been compiled, and whether compiling failed (then never
    again)."""

    def __init__(self):
        self.ready: set[int] = set()
        self.broken: str | None = None
        self.suspect: str | None = None  # a warm-up failed; compiling is blamed once the same answer works without

    def decode(self, model, setting: str, rows: int, needed: int, adapter: str | None, limit: int | None,
               warm, new_tokens: int = MIN_NEW_TOKENS, **where) -> DecodePlan:
        """The plan for this batch; the first use of a cache length compiles it by `warm(kwargs)` (a short
        answer to the same conversation). A warm-up that fails leaves this batch to the dynamic cache; if that
        answer works (`settle`), the failure was the compile's: said once, and compiling is off for the model.
        `where`: `plan`'s device_type / free_bytes."""
        if self.broken:
            return DecodePlan({}, self.broken)
        if new_tokens < MIN_NEW_TOKENS:
            return DecodePlan({}, f"{new_tokens} new tokens: too few to be worth a compile")
        found = plan(model, setting, rows, needed, adapter, limit, **where)
        length = found.kwargs.get("max_cache_len")
        if not found.compiled or length in self.ready:
            return found
        print(f"vlmchat: compiling the decode step for a {length:,}-token cache (once per load, adapter set and "
              "cache length; ~30 s for a 7B model), after which answers come about twice as fast",
              file=sys.stderr, flush=True)
        try:
            warm(found.kwargs)
        except Exception as exc:  # noqa: BLE001 - the compile's or the answer's: `settle` tells them apart
            self.suspect = f"compiling failed ({named(exc)})"
            return DecodePlan({}, self.suspect)
        self.ready.add(length)
        return found

    def settle(self, worked: bool) -> None:
        """Call after each answer: when a warm-up failed before an answer that `worked` (the same conversation,
        with the dynamic cache), the failure was the compile's, so compiling is turned off, and said once. A
        warm-up failure followed by a failed answer (out of memory, a bad input) blames nothing."""
        if worked and self.suspect and not self.broken:
            self.broken = self.suspect
            print(f"vlmchat: {self.broken}; answers use the dynamic cache (set compile = \"off\" in settings.toml "
                  "[model] to skip trying)", file=sys.stderr, flush=True)
        self.suspect = None
