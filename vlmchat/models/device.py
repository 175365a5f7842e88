"""Choosing where a model runs and in which precision; every choice comes with its reason."""

from __future__ import annotations


def choose_device(preference: str = "auto") -> tuple[str, str]:
    """(device, reason) for `preference` in auto|cpu|cuda|mps."""
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


def choose_dtype(device: str, preference: str = "auto"):
    """(torch dtype, reason) for the device and `preference` in auto|float32|bfloat16|float16."""
    import torch

    if preference != "auto":
        return getattr(torch, preference), f"{preference} chosen in settings"
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16: the GPU supports it and it halves memory with no overflow risk"
        return torch.float16, "float16: the GPU has no bfloat16 support"
    if device == "mps":
        return torch.float16, "float16 on Apple MPS"
    return torch.float32, "float32 on CPU (half precision is slow or unsupported there)"
