"""Loading the base model for training in the child process: precision, QLoRA, checkpointing, LoRA.

Which layers LoRA trains follows the family profile (vlmchat/models/families.py): the language model's
linear layers by default; `targets` adds the projector ("language+projector") or the vision tower too
("all"). Linear layers are found by walking the model, so one regex fits every family.
"""

from __future__ import annotations

import re

from ..models.families import PROJECTORS, VISION_TOWERS, profile_for

QUANTIZED_LINEAR_NAMES = ("Linear4bit", "Linear8bitLt")


def _linear_names(model) -> list[str]:
    import torch

    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) or type(module).__name__ in QUANTIZED_LINEAR_NAMES]


def target_regex(model, targets: str = "language") -> str:
    """PEFT `target_modules` regex: the family's language-model layers, plus projector / vision tower if asked."""
    language = profile_for(model.config).lora_targets
    if targets == "language":
        return language
    words = PROJECTORS + (VISION_TOWERS if targets == "all" else ())
    extra = set()
    for name in _linear_names(model):
        parts = name.split(".")
        if "lm_head" not in parts and any(w in parts for w in words):
            extra.add(re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(name)))
    if not extra:
        return language
    return f"(?:{language})|" + "|".join(f"(?:{pattern})" for pattern in sorted(extra))


def load_for_training(spec, setup, device):
    """(PEFT model ready to train, processor) for `spec` on `device` following `setup` (TrainingSetup)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = spec.model_source or spec.model
    processor = AutoProcessor.from_pretrained(source)
    kwargs: dict = {"dtype": getattr(torch, setup.dtype)}
    if setup.bits == 4:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True, llm_int8_skip_modules=list(profile_for(source_config(source)).unquantized))
        kwargs["device_map"] = {"": device}
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    profile = profile_for(model.config)
    if profile.needs_template(processor):
        processor.chat_template = profile.chat_template
    # No peft.prepare_model_for_kbit_training for QLoRA: it makes a float32 copy of every parameter left unquantized
    # (the vision tower, embeddings, lm_head, norms), which are frozen and need none, and the float32 norms widen the
    # activations: an 11B QLoRA step (1,023 tokens, one picture) peaked at 37.9 GiB with it, as much as bf16 LoRA.
    # The LoRA weights themselves are float32 either way (get_peft_model's autocast_adapter_dtype).
    config = LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                        target_modules=target_regex(model, spec.targets))
    model = get_peft_model(model, config)
    if setup.gradient_checkpointing:
        _checkpoint(model.get_base_model())
    return model, processor


def _checkpoint(model) -> None:
    """Gradient checkpointing (non-reentrant: it works with DDP and needs no input that requires grad) on the
    language model alone when nothing outside it trains, else on the whole model.

    Checkpointing the whole model makes transformers and PEFT hook every embedding of it, the vision tower's too,
    so that its output requires grad: the backward pass then runs through the frozen vision tower for no gradient
    anyone needs (a SmolVLM-256M step at high detail: 84 s against 35 s, the same LoRA gradients)."""
    pattern = profile_for(model.config).language_model
    outside = any(parameter.requires_grad and not re.match(pattern, name)
                  for name, parameter in model.named_parameters())
    language = next((module for name, module in model.named_modules() if re.fullmatch(pattern, name)), None)
    if outside or not getattr(language, "supports_gradient_checkpointing", False):
        language = model
    language.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def source_config(source: str):
    """The transformers config of a model folder or hub id."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source)


def make_optimizer(model, setup, learning_rate: float):
    """AdamW over the trainable (LoRA) parameters, or bitsandbytes' paged 8-bit AdamW when `setup` says so."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if setup.optimizer == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=learning_rate, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)


def make_schedule(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup, then cosine decay to zero."""
    import math

    import torch

    warmup = max(1, math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
