"""Where the modules of a model that does not fit its GPU go: the vision parts on the GPU, the layers that do not
fit in system RAM.

Accelerate brings an offloaded module's weights to the GPU around that module's `forward` only. Some vision code
reads weights outside a forward: Chameleon's VQ codebook (`quantize.embedding.weight`), the attention-pooling head
of SigLIP (Gemma 3's tiny test model, PaliGemma), so where accelerate's placement put those in RAM, the first picture
failed with "Tensor on device meta is not on the expected device cuda:0" (Chameleon-7B planned for an 8 GiB card,
measured on an H200; the same on the CPU with disk offload, tests/test_offload.py). The vision tower and projector
are small beside the language layers and run for every picture, so they stay on the GPU and only language layers
are offloaded.
"""

from __future__ import annotations

from ..errors import ModelLoadError
from .sizes import VISION_PARTS

GIB = 2**30


def vision_parts(model) -> list[str]:
    """The outermost modules (and loose parameters, LLaVA-NeXT's `image_newline`) of `model` that are its vision
    tower or projector, by name as `sizes` counts them."""
    out = []
    for name, _ in [*model.named_modules(), *model.named_parameters()]:
        parent = name.rpartition(".")[0]
        if name and VISION_PARTS.search(name) and not (parent and VISION_PARTS.search(parent)):
            out.append(name)
    return out


def offload_device_map(config, dtype, max_memory: dict) -> dict:
    """A `device_map` for `from_pretrained` of a model offloaded under `max_memory` (GiB per device; the first key
    is the device that computes, e.g. {0: 5.4, "cpu": 100}; "disk" only where listed): the model's own placement (transformers'
    `infer_auto_device_map`, its no-split layers) with the vision parts on the computing device: where that placement
    put some elsewhere (they come after the layers that filled it), it is made again with their size kept free, and
    they are moved there."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.integrations.accelerate import infer_auto_device_map

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    compute = next(iter(max_memory))
    caps = {key: int(value * GIB) for key, value in max_memory.items()}

    def place() -> dict:
        return infer_auto_device_map(skeleton, max_memory=caps, no_split_module_classes=skeleton._no_split_modules or [])

    sizes = {name: p.numel() * p.element_size() for name, p in skeleton.named_parameters()}
    parts, room, full = vision_parts(skeleton), set(), caps[compute]
    offloaded = {"cpu", "disk"} - {compute}  # a part on another GPU is computed there: only these break
    device_map = place()
    while True:  # parts placed after the layers that filled the device: room is kept for them, and it is placed again
        elsewhere = [name for name in parts if _devices(device_map, name) & offloaded]
        if set(elsewhere) <= room:
            break
        room |= set(elsewhere)
        caps[compute] = max(0, full - sum(size for key, size in sizes.items() if _within(key, room)))
        device_map = place()
    for name in elsewhere:
        _pin(device_map, skeleton, name, compute)
    # the plan's RAM figure leaves out the room accelerate keeps free for the largest offloaded layer (and the
    # vision parts moved here): a model that just fits RAM in the plan can need the disk in this placement
    if "disk" in device_map.values() and "disk" not in max_memory:
        raise ModelLoadError("The model does not fit in GPU memory and system RAM together now (part of it would "
                             "have to be read from disk on every token); close other programs, or use a smaller "
                             "model.")
    return device_map


def _within(key: str, names) -> bool:
    """Is `key` one of `names` or inside one of them?"""
    return any(key == name or key.startswith(name + ".") for name in names)


def _owner(device_map: dict, name: str) -> str | None:
    """The map entry that holds `name` (a module or parameter above it), if one does."""
    return next((key for key in device_map if key == "" or name.startswith(key + ".")), None)


def _devices(device_map: dict, name: str) -> set:
    """Where the map puts `name`: its own entry, the entries inside it, or the entry that holds it."""
    owner = _owner(device_map, name)
    return ({device for key, device in device_map.items() if _within(key, [name])}
            | ({device_map[owner]} if owner is not None else set()))


def _pin(device_map: dict, model, name: str, device) -> None:
    """`name` and everything in it on `device`; a map entry that holds it elsewhere is split into its children."""
    for key in device_map:
        if _within(key, [name]):
            device_map[key] = device
    owner = _owner(device_map, name)
    if owner is None or device_map[owner] == device:
        return
    where = device_map.pop(owner)
    module = model.get_submodule(owner)
    prefix = f"{owner}." if owner else ""
    for child, _ in module.named_children():
        device_map[prefix + child] = where
    for own, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
        device_map[prefix + own] = where
    _pin(device_map, model, name, device)
