"""LoRA adapters on a loaded model, through PEFT named adapters: attach, switch, detach.

The base weights are never reloaded: every adapter is a small set of extra matrices on the one model,
and "base" means running with all adapters disabled. (On a CPU with memory to spare, the adapter layers
also keep one merged copy of their weights for one-row decode steps: `_lean_lora_linear`.)
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from ..errors import InputError

BASE = "base"


def is_base(name: str | None) -> bool:
    """True when `name` asks for the base model without any adapter ('Base' too: no adapter may be named so)."""
    return not name or name.strip().lower() == BASE


def attach_adapter(model, name: str, path: Path):
    """Load the adapter at `path` onto `model` under `name`; returns the (possibly wrapped) model."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        _forget_layers(model)
        model.load_adapter(str(path), adapter_name=name, is_trainable=False, use_safetensors=True)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=False, use_safetensors=True)


def detach_adapter(model, name: str):
    """Remove adapter `name`; returns the plain base model once no adapter is left."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        if name in (getattr(model, "peft_config", None) or {}):
            _strip_injected(model)
        return model
    if name not in model.peft_config:
        return model
    _forget_layers(model)
    if len(model.peft_config) == 1:
        return model.unload()
    if model.active_adapter == name:
        model.set_adapter(next(n for n in model.peft_config if n != name))
    model.delete_adapter(name)
    return model


def _strip_injected(model) -> None:
    """Undo what a PeftModel.from_pretrained that failed (weights of other shapes) left in the plain model: its
    layers put in place and its peft_config. The adapter was left resident in the base, listed and choosable."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                setattr(parent, child_name, child.get_base_layer())
            elif isinstance(child, AuxiliaryTrainingWrapper):
                setattr(parent, child_name, child.original_module)
    if "peft_config" in model.__dict__:
        del model.__dict__["peft_config"]


def resident_adapters(model) -> list[str]:
    """Names of the adapters attached to `model`."""
    return list(getattr(model, "peft_config", {}) or {})


def check_adapter(model, name: str | None) -> None:
    """Raise InputError unless `name` is 'base'/None or an adapter attached to `model`."""
    if not is_base(name) and name not in resident_adapters(model):
        raise InputError(f"Adapter '{name}' is not loaded; load it in the Adapters tab first "
                         f"(loaded: {', '.join(resident_adapters(model)) or 'none'}).")


def use_adapter(model, name: str | None):
    """A context in which `model` answers with adapter `name` (or the bare base for 'base'/None).

    Every use of the model goes through here, so the model simply stays as selected: a run of
    requests on one adapter switches nothing, and a switch touches only the adapter layers, found
    once per set of attached adapters. (PEFT's `set_adapter` walks all 3,284 modules of SmolVLM-256M,
    ~12 ms, and its `disable_adapter` context walks them twice per use, ~42 ms.)
    """
    check_adapter(model, name)
    if resident_adapters(model):
        _select(model, None if is_base(name) else name)
    return contextlib.nullcontext()


def _adapter_layers(model) -> list:
    """The modules that switch with the adapter: PEFT's tuner layers and its wrappers of trained modules.

    PEFT's plain LoRA linear layers are given a lean forward for answering (`_lean_lora_linear`)."""
    from peft.tuners.lora.layer import Linear
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    layers = [module for module in model.modules() if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
    for layer in layers:
        if type(layer) is Linear:
            layer.__class__ = _lean_lora_linear()
    return layers


@functools.cache
def _lean_lora_linear():
    """PEFT's LoRA `Linear` with a lean forward for answering with one plain LoRA adapter, or none.

    PEFT's forward pays per call for what an answer never uses (mixed-batch adapter names, variant
    arguments, dtype casts, dropout and the LoRA matrices as module calls, attribute look-ups through
    `nn.Module.__getattr__`): with 210 LoRA layers, decode on SmolVLM-256M ran 16% slower with an
    adapter than without. This forward is the same sum, `base(x) + scaling * B(A(x))`, in three tensor
    operations on weights it keeps at hand (`benchmarks/realsize/bench.py` has the figure). Anything
    else (training, merged weights, several active adapters, DoRA and other variants, extra arguments)
    goes to PEFT's own forward. The weights at hand are references, not copies, dropped whenever an
    adapter is attached or detached (`_forget_layers`).

    What is left, ~15 us a layer and token for its three small products, is 13-18% of a SmolVLM-256M
    token on a CPU. So where `_merge_steps_fit` allows, a step of one row (a token of a one-row answer)
    runs on a copy of the base weight with the adapter added in (`_merged`), as fast as the base. Its
    logits differ from the unmerged sum by the weight dtype's rounding (bf16: mean 0.005 against the
    adapter's own 0.28 on the 256M); prompts, batches and eval scores use the unmerged sum.
    """
    import torch
    import torch.nn.functional as F
    from peft.tuners.lora.layer import Linear

    from torch.nn.modules import module as torch_module

    def plain(base) -> bool:
        """A bare `nn.Linear` with no hook now: its forward is `F.linear` and can be called as that."""
        return not (base._forward_hooks or base._forward_pre_hooks or torch_module._global_forward_hooks
                    or torch_module._global_forward_pre_hooks)

    class LeanLoraLinear(Linear):
        def _lean(self, name):
            """(name, base layer, its weight or None when it is not a bare nn.Linear, A, B weight, B bias,
            scaling) or None for PEFT's forward."""
            lora_a = self.lora_A._modules.get(name)
            if lora_a is None or name in self.lora_variant or lora_a.bias is not None:
                return None
            base, lora_b = self.base_layer, self.lora_B._modules[name]
            bare = type(base) is torch.nn.Linear and "forward" not in base.__dict__
            lean = (name, base, base.weight if bare else None, lora_a.weight, lora_b.weight, lora_b.bias,
                    self.scaling[name])
            self.__dict__["_vlmchat_lean"] = lean
            return lean

        def _merged(self, lean):
            """(weight, bias) of the base layer with adapter `lean` added in, made in float32 and stored in the
            base's dtype at the adapter's first one-row step (~90 ms for the 210 layers of SmolVLM-256M) and kept
            while neither changes: one copy per layer, the last adapter's."""
            _, base, weight, a, b, b_bias, scaling = lean
            versions = weight._version, a._version, b._version  # changed in place: made again
            kept = self.__dict__.get("_vlmchat_merged")
            if kept is None or kept[0] is not lean or kept[1] != versions:
                with torch.no_grad():  # a copy for answering: no graph back to the adapter's weights, whatever mode
                    # Into the previous adapter's copy when there is one: fresh memory is paged in while the answer
                    # waits.
                    copy = kept[2] if kept is not None else torch.empty_like(weight)
                    copy.copy_(weight.to(torch.float32, copy=True).addmm_(b.float(), a.float(), alpha=scaling))
                    bias = base.bias if b_bias is None else (
                        b_bias.float() * scaling + (0 if base.bias is None else base.bias.float())).to(weight.dtype)
                kept = self.__dict__["_vlmchat_merged"] = lean, versions, copy, bias
            return kept[2:]

        def forward(self, x, *args, **kwargs):
            if args or kwargs or self.training or self.merged_adapters:
                return super().forward(x, *args, **kwargs)
            lean = self.__dict__.get("_vlmchat_lean")
            if self._disable_adapters:
                if lean is not None and lean[2] is not None and plain(lean[1]):
                    return F.linear(x, lean[2], lean[1].bias)
                return self.base_layer(x)
            name = self._active_adapter
            name = name if isinstance(name, str) else name[0] if len(name) == 1 else None
            if lean is None or lean[0] != name:
                lean = self._lean(name)
            if lean is None:
                return super().forward(x)  # several adapters, one not on this layer, or a variant
            _, base, weight, a, b, b_bias, scaling = lean
            if weight is not None and plain(base):
                if (x.numel() == x.shape[-1] and self.__dict__.get("_vlmchat_merge_steps")
                        and not torch.is_grad_enabled()):  # answering; a gradient must reach the adapter's weights
                    return F.linear(x, *self._merged(lean))
                out = F.linear(x, weight, base.bias)
            else:
                out = base(x)
            # In the adapter's dtype, as PEFT does: it keeps an adapter on a 16-bit base in float32, and on a CPU
            # float32 products this small are also ~3x faster than bfloat16 ones.
            return out.add_(F.linear(F.linear(x.to(a.dtype), a), b, b_bias), alpha=scaling)

    LeanLoraLinear.__name__ = LeanLoraLinear.__qualname__ = "LeanLoraLinear"
    return LeanLoraLinear


def _forget_layers(model) -> None:
    """Drop what `_select` and the lean LoRA layers keep of the adapters (after an attach or a detach)."""
    known = model.__dict__.pop("_vlmchat_adapter_layers", None)
    for layer in known[1] if known else ():
        for kept in ("_vlmchat_lean", "_vlmchat_merged", "_vlmchat_merge_steps"):
            layer.__dict__.pop(kept, None)


MERGED_COPY_MAX = 2**30  # bytes: SmolVLM-256M's copy is 0.2 GiB, -500M's 0.7; Qwen2-VL-2B's would be 2.9


def _merge_steps_fit(layers) -> bool:
    """True when one-row steps may run on merged copies of the adapter layers' weights: on a CPU, where each LoRA
    layer's extra products cost a fixed ~15 us a token, which is 15-22% of a SmolVLM-256M or -500M token but
    4-9% of a Qwen2-VL-2B one, so only a copy of at most MERGED_COPY_MAX is worth its memory, and only when it
    takes at most a quarter of the memory free now. A GPU keeps its memory for the model."""
    import psutil

    weights = [layer.base_layer.weight for layer in layers if hasattr(layer, "lora_A")
               and hasattr(getattr(layer, "base_layer", None), "weight")]
    if not weights or any(weight.device.type != "cpu" for weight in weights):
        return False
    size = sum(weight.nbytes for weight in weights)
    return size <= MERGED_COPY_MAX and size * 4 <= psutil.virtual_memory().available


def _select(model, name: str | None) -> None:
    """Enable adapter `name` on every adapter layer, or disable them all for None (PEFT's per-layer API)."""
    attached = tuple(model.peft_config)
    known = model.__dict__.get("_vlmchat_adapter_layers")
    if known and known[0] == attached:
        layers = known[1]
    else:
        layers = _adapter_layers(model)
        merge = _merge_steps_fit(layers)
        for layer in layers:
            layer.__dict__["_vlmchat_merge_steps"] = merge
        model.__dict__["_vlmchat_adapter_layers"] = (attached, layers)
    tuner = next((layer for layer in layers if hasattr(layer, "disable_adapters")), None)
    if tuner is not None and tuner.disable_adapters == (name is None) and (name is None or tuner.active_adapters == [name]):
        return  # already so (checked on a layer, so a switch made through PEFT's own API is seen too)
    for layer in layers:
        if name is None:
            layer.enable_adapters(False)
        else:
            if layer.disable_adapters:
                layer.enable_adapters(True)
            # A wrapper of a trained module (PEFT's modules_to_save) that this adapter did not train answers as the
            # base module, as PEFT's own _set_adapter does: naming the adapter there raised "Adapter demo-es not
            # found in {'other'}", and every other adapter failed until a restart (blind tester).
            held = name in getattr(layer, "_adapters", (name,))
            layer.set_adapter(name if held else [], inference_mode=True)
    if name is not None:
        model.active_adapter = model.base_model.active_adapter = name


def default_lora_config(model=None, r: int = 8, lora_alpha: int = 32, lora_dropout: float = 0.05):
    """PEFT LoraConfig with the project's defaults (r=8, alpha=32, dropout 0.05) on `model`'s language model.

    The targets are the family profile's (vlmchat/models/families.py), the one place that knows where
    each family keeps its language model (`model.text_model` in SmolVLM, `model.language_model` elsewhere);
    `model` may be a model, a config or a model_type, None for the generic profile.
    """
    from peft import LoraConfig

    from ..models.families import lora_target_modules

    return LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                      target_modules=lora_target_modules(model))
