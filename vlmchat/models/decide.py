"""The one load decision: (model source, settings, policy, measured memory) -> device, dtype, bits, device map, why.

The loader, the status line, the Model tab, `launch.py plan` and the fine-tune setup all show this
decision, so what a user is shown before Load is what Load does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from .families import choose_detail, profile_for
from .plan import Plan, plan_for_machine
from .resolve import ModelSource
from .sizes import ModelSize, picture_tokens, size_for_source, unquantized_for_family


@dataclass(frozen=True)
class LoadDecision:
    """How a model will be loaded here, the sizes it was decided from, and the reasons."""

    source: ModelSource
    size: ModelSize
    plan: Plan
    device_reason: str

    @property
    def ok(self) -> bool:
        return self.plan.ok

    @property
    def reason(self) -> str:
        """The device reason, then the plan's reason (precision and placement) and its warning."""
        return "; ".join(part for part in (self.device_reason, self.plan.reason, self.plan.warning) if part)

    def summary(self) -> str:
        """One line: the plan's summary, then the device reason in brackets."""
        return self.plan.summary() + (f" ({self.device_reason})" if self.device_reason else "")

    def key(self) -> tuple:
        """What Load does with this decision (device, dtype, bits, device map, unquantized modules, estimate)."""
        plan = self.plan
        return plan.device, plan.dtype, plan.bits, plan.device_map, plan.unquantized, plan.estimate_gib

    def to_dict(self) -> dict:
        """JSON-ready: the model, where its sizes came from, the device reason and the plan."""
        return {"model": self.source.model_id, "sizes_from": self.size.source, "device_reason": self.device_reason,
                **self.plan.to_dict()}


def choose_device(preference: str = "auto") -> tuple[str, str]:
    """(device kind cpu|cuda|mps, reason) for `preference` in auto|cpu|cuda|mps."""
    import torch

    from ..errors import SettingsError

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if preference == "cpu":
        return "cpu", "CPU chosen in settings"
    if preference == "cuda":
        if not cuda:
            raise SettingsError("model.device is 'cuda' but no CUDA GPU is visible; set device = \"auto\" or \"cpu\".")
        return "cuda", f"CUDA chosen in settings ({torch.cuda.get_device_name(0)})"
    if preference == "mps":
        if not mps:
            raise SettingsError("model.device is 'mps' but Apple MPS is not available; set device = \"auto\".")
        return "mps", "Apple MPS chosen in settings"
    if cuda:
        return "cuda", f"auto-detected CUDA GPU: {torch.cuda.get_device_name(0)}"
    if mps:
        return "mps", "auto-detected Apple MPS"
    return "cpu", "auto-detected: no CUDA or MPS device, running on CPU"


def decide_load(source: ModelSource, settings: Settings, policy: str | None = None, *, token: str | None = None,
                vram_gib: float | None = None, context_tokens: int = 4096, images: int = 1,
                device: str | None = None) -> LoadDecision:
    """The decision for `source` on this machine (or, with `vram_gib`, on one GPU with that much free)."""
    policy = policy or settings.model.quantization
    size = size_for_source(source, settings, token=token)
    if vram_gib is not None:
        kind, why = "cuda", ""  # a what-if: the plan's reason names the GPU size
    else:
        kind, why = choose_device(device or settings.model.device)
    family = source.family()
    tokens = None
    if kind == "cpu" and source.path is not None:  # the CPU estimate counts a picture's tokens at the default detail
        detail, _ = choose_detail(settings.generation.image_detail, profile_for(family), "cpu")
        tokens = picture_tokens(source.path, detail)
    plan = plan_for_machine(size, policy, device=kind, dtype=settings.model.dtype, vram_gib=vram_gib,
                            unquantized=unquantized_for_family(family), context_tokens=context_tokens,
                            images=images, picture_tokens=tokens)
    return LoadDecision(source, size, plan, why)
