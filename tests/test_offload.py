"""A model that does not fit its GPU is loaded with part of its layers elsewhere (vlmchat/models/offload.py).

No GPU here: the same placement is made with the CPU as the computing device and the disk as the offload (accelerate
treats both alike: an offloaded module's weights are on the meta device until its forward). Accelerate's own "auto"
placement failed on the first picture for Chameleon (its VQ codebook, on an H200 at 8 GiB) and for Gemma 3 (SigLIP's
pooling head), both with "Tensor on device meta is not on the expected device"."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from families import BUILDERS, save_family
from vlmchat.models.families import profile_for
from vlmchat.models.offload import GIB, offload_device_map, vision_parts


def _bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("model_type", list(BUILDERS))
def test_every_family_answers_a_picture_with_half_its_layers_offloaded(model_type, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    family = save_family(model_type, tmp_path / "model")
    if family.missing:
        pytest.skip(f"{model_type}: this environment lacks {family.missing}")
    whole = AutoModelForImageTextToText.from_pretrained(family.path, dtype=torch.float32)
    half = _bytes(whole) / 2 / GIB
    del whole
    device_map = offload_device_map(AutoConfig.from_pretrained(family.path), torch.float32, {"cpu": half, "disk": 1.0})
    assert "disk" in device_map.values(), device_map  # offloaded for real
    model = AutoModelForImageTextToText.from_pretrained(family.path, dtype=torch.float32, device_map=device_map,
                                                        offload_folder=str(tmp_path / "offload")).eval()
    vision = vision_parts(model)
    assert vision, "no vision tower found by name"
    parameters = dict(model.named_parameters())
    for name in vision:  # every weight of the vision parts where the computing is done, none on the meta device
        weights = [parameters[name]] if name in parameters else model.get_submodule(name).parameters()
        assert all(p.device.type == "cpu" for p in weights), name
    processor = AutoProcessor.from_pretrained(family.path)
    profile = profile_for(model)
    template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
    picture = Image.new("RGB", (64, 64), "white")
    picture.paste(Image.new("RGB", (32, 32), "red"), (16, 16))
    conversation = [{"role": "user", "content": [{"type": "image", "image": picture},
                                                 {"type": "text", "text": "Describe the image."}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt", **template)
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape[1] == inputs["input_ids"].shape[1] and torch.isfinite(logits).all()


def test_an_offloaded_plan_places_the_vision_parts_on_the_gpu(tmp_path):
    """The plan's from_pretrained arguments for a model that does not fit: a device map with the vision tower and
    projector on GPU 0 and layers in RAM (the map only: no GPU here to load it on)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from vlmchat.models.plan import plan_for_machine
    from vlmchat.models.sizes import size_from_folder

    family = save_family("llava", tmp_path / "model")
    size = size_from_folder(family.path)
    plan = plan_for_machine(size, vram_gib=80)  # fits: one device, nothing offloaded, no map computed
    assert plan.ok and plan.offload_gib == 0 and plan.load_kwargs(family.path)["device_map"] == plan.device
    total = _bytes(AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(family.path))) / GIB
    offloaded = dataclasses.replace(plan, dtype="float32", device_map="auto", offload_gib=total / 2,
                                    max_memory={0: total / 2, "cpu": 64.0})
    kwargs = offloaded.load_kwargs(family.path)
    device_map = kwargs["device_map"]
    assert isinstance(device_map, dict) and "max_memory" not in kwargs and kwargs["dtype"] == torch.float32
    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(family.path))
    vision = vision_parts(skeleton)
    assert vision == ["model.vision_tower", "model.multi_modal_projector"]
    on = {key: device for key, device in device_map.items()}
    for name in vision:  # the part itself, or every entry inside it
        inside = {device for key, device in on.items() if key == name or key.startswith(name + ".")}
        assert inside == {0}, (name, on)
    assert "cpu" in on.values(), on  # language layers in RAM


def test_a_model_that_no_longer_fits_gpu_and_ram_together_is_refused_with_what_to_do(tmp_path):
    """A placement that would read layers from disk on every token (the plan's RAM figure leaves out the room
    accelerate keeps for the largest layer) is refused with what to do, not handed to from_pretrained, whose error
    asked for an offload_folder and was reported as 'not a vision-language model vlmchat can load'."""
    import torch
    from transformers import AutoConfig

    from vlmchat.errors import ModelLoadError

    family = save_family("llava", tmp_path / "model")
    with pytest.raises(ModelLoadError, match="close other programs, or use a smaller model"):
        offload_device_map(AutoConfig.from_pretrained(family.path), torch.float32, {"cpu": 0.0005})  # no GPU here: the CPU computes
