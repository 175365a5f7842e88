"""Every supported VLM family through the one model manager, on tiny random instances.

Each family (tests/families.py) is built once per session from the real transformers classes and
loaded from disk like a hub model. Random weights: the tests check that each feature runs and
that the processor did the family's job (image tokens, images per message), not what is said.
"""

from __future__ import annotations

import math

import pytest
from PIL import Image

from families import BUILDERS, TinyFamily, save_family
from vlmchat.errors import InputError, ModelLoadError
from vlmchat.models.families import GENERIC, PROFILES, lora_target_modules, profile_for, unquantized_modules
from vlmchat.models.manager import GenerationParams, ModelManager

PARAMS = GenerationParams(max_new_tokens=4)


def picture(colour: str = "red", size: tuple[int, int] = (32, 32)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), colour), (size[0] // 4, size[1] // 4))
    return image


def chat(*images: Image.Image, text: str = "Describe the image.") -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image", "image": im} for im in images),
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="session")
def build_family(tmp_path_factory):
    """name -> TinyFamily, each built and saved once per session."""
    built: dict[str, TinyFamily] = {}

    def build(model_type: str) -> TinyFamily:
        if model_type not in built:
            built[model_type] = save_family(model_type, tmp_path_factory.mktemp(model_type))
        return built[model_type]

    return build


@pytest.fixture(scope="session", params=list(BUILDERS))
def family(request, build_family) -> TinyFamily:
    return build_family(request.param)


@pytest.fixture(scope="session")
def loaded(family, demo_settings):
    """A ModelManager with the family's tiny model loaded by path."""
    if family.missing:
        pytest.skip(f"{family.model_type}: this environment lacks {family.missing}")
    manager = ModelManager(demo_settings)
    manager.load(str(family.path), quantization="none")
    yield manager
    manager.unload()


def _fresh_model(family: TinyFamily):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(family.path)


def _lora(model, **overrides):
    from peft import LoraConfig, get_peft_model

    config = dict(r=4, lora_alpha=8, target_modules=lora_target_modules(model.config))
    return get_peft_model(model, LoraConfig(**config, **overrides))


def test_load(family, loaded):
    assert loaded.info.architecture.endswith("ForConditionalGeneration")
    assert loaded.model.config.model_type == family.model_type
    assert profile_for(loaded.model) is PROFILES[family.model_type]


def test_chat_with_image(family, loaded):
    inputs = ModelManager._inputs(loaded.model, loaded.processor, [chat(picture())])
    image_id = loaded.processor.tokenizer.convert_tokens_to_ids(family.image_token)
    assert int((inputs["input_ids"] == image_id).sum()) == family.image_tokens
    answer = loaded.generate(chat(picture()), PARAMS)
    assert isinstance(answer, str)


def test_caption_batch(family, loaded):
    sizes = [(32, 32), (48, 24), (20, 40)]
    pictures = [picture(colour, size) for colour, size in zip(["red", "green", "blue"], sizes)]
    answers = loaded.generate_batch([chat(p, text="caption en") for p in pictures], PARAMS)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_lora_adapter_attaches(family, loaded, tmp_path):
    import torch
    from vlmchat.lora.runtime import use_adapter

    trained = _lora(_fresh_model(family), init_lora_weights=False)  # random B: the adapter changes the output
    trained.save_pretrained(tmp_path / "tiny")
    inputs = ModelManager._inputs(loaded.model, loaded.processor, [chat(picture())])
    with torch.no_grad():
        base = loaded.model(**inputs).logits
    loaded.load_adapter("tiny", tmp_path / "tiny")
    try:
        assert loaded.adapter_names() == ["tiny"]
        assert isinstance(loaded.generate(chat(picture()), PARAMS, adapter="tiny"), str)
        with torch.no_grad(), use_adapter(loaded.model, "tiny"):
            adapted = loaded.model(**inputs).logits
        assert not torch.allclose(base, adapted)
    finally:
        loaded.unload_adapter("tiny")
    assert loaded.adapter_names() == []


def test_two_lora_training_steps(family, loaded):
    import torch

    model = _lora(_fresh_model(family))
    base = model.get_base_model()
    profile = profile_for(base)
    lora_modules = {name.split(".lora_")[0] for name, _ in base.named_parameters() if ".lora_" in name}
    assert lora_modules and all(any(name.startswith(p) for p in ("model.language_model", "model.text_model",
                                                                  "model.layers")) for name in lora_modules)
    vision = {name: p.detach().clone() for name, p in base.named_parameters()
              if any(name.startswith(prefix) for prefix in profile.unquantized if prefix != "lm_head")}
    assert all(not base.get_parameter(name).requires_grad for name in vision)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    batch = dict(ModelManager._inputs(model, loaded.processor, [chat(picture(), text="a red square")]))
    labels = batch["input_ids"].clone()
    special = torch.tensor(loaded.processor.tokenizer.all_special_ids)
    labels[torch.isin(labels, special) | (batch["attention_mask"] == 0)] = -100
    batch["labels"] = labels
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(**batch).loss
        assert math.isfinite(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if n in lora_before)
    assert all(torch.equal(base.get_parameter(name), value) for name, value in vision.items())


def test_4bit_on_cpu(family, loaded, demo_settings):
    """bitsandbytes 0.50 runs nf4 4-bit on CPU; the family's vision parts stay unquantized when skipped."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    manager = ModelManager(demo_settings)
    try:
        manager.load(str(family.path), quantization="4bit")
        quantized = [n for n, m in manager.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert any(".layers." in n for n in quantized)
        assert isinstance(manager.generate(chat(picture()), PARAMS), str)
    finally:
        manager.unload()
    # the profile's patterns, as the quantization plan passes them, keep the vision tower and projector whole
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32,
                                llm_int8_skip_modules=unquantized_modules(family.model_type))
    model = AutoModelForImageTextToText.from_pretrained(family.path, quantization_config=config, device_map="cpu")
    quantized = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and not [n for n in quantized if any(n.startswith(p) for p in unquantized_modules(model))]


QWEN = ["qwen2_vl", "qwen2_5_vl"]


@pytest.mark.parametrize("model_type", QWEN)
def test_missing_package_is_a_clear_load_error(model_type, build_family, demo_settings):
    family = build_family(model_type)
    if not family.missing:
        pytest.skip(f"{model_type} loads in this environment")
    with pytest.raises(ModelLoadError, match="not installed"):
        ModelManager(demo_settings).load(str(family.path))


@pytest.mark.parametrize("model_type", QWEN)
def test_qwen_model_without_its_processor(model_type, build_family):
    """Where the Qwen processor cannot be built, the model itself still generates and trains a LoRA."""
    import torch
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    family = build_family(model_type)
    tokenizer = AutoTokenizer.from_pretrained(family.path)
    pixels = Qwen2VLImageProcessorPil.from_pretrained(family.path)(images=[picture()], return_tensors="pt")
    tokens = int(pixels["image_grid_thw"].prod()) // 4
    assert tokens == family.image_tokens
    prompt = ("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * tokens +
              "<|vision_end|>Describe the image.<|im_end|>\n<|im_start|>assistant\n")
    batch = dict(tokenizer(prompt, return_tensors="pt"), **pixels)
    # what the processor would add: which tokens are image tokens, for multimodal RoPE
    batch["mm_token_type_ids"] = (batch["input_ids"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")).long()
    model = _lora(_fresh_model(family))
    with torch.no_grad():
        assert model.generate(**batch, max_new_tokens=4).shape[1] > batch["input_ids"].shape[1]
    labels = batch["input_ids"].clone()
    labels[torch.isin(labels, torch.tensor(tokenizer.all_special_ids))] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(**batch, labels=labels).loss
        assert math.isfinite(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not [n for n, _ in model.named_parameters() if ".lora_" in n and ".visual." in n]


# --- family quirks from the profile table ------------------------------------------------------------

@pytest.fixture(scope="module")
def mllama(build_family, demo_settings):
    manager = ModelManager(demo_settings)
    manager.load(str(build_family("mllama").path), quantization="none")
    yield manager
    manager.unload()


def test_mllama_image_moves_before_the_text(mllama):
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the image."},
                                             {"type": "image", "image": picture()}]}]
    ids = ModelManager._inputs(mllama.model, mllama.processor, [messages])["input_ids"][0].tolist()
    tok = mllama.processor.tokenizer
    assert ids.index(tok.convert_tokens_to_ids("<|image|>")) < ids.index(tok.convert_tokens_to_ids("<|eot_id|>"))
    text = tok.decode(ids)
    assert text.index("<|image|>") < text.index("Describe")
    assert messages[0]["content"][0]["type"] == "text"  # the caller's messages are left alone


def test_mllama_refuses_a_second_image_with_a_fix(mllama):
    with pytest.raises(InputError, match="at most 1 image"):
        mllama.generate(chat(picture(), picture("blue")), PARAMS)


def test_template_for_processors_without_one(build_family, demo_settings):
    """PaliGemma ships no chat template: the profile's prompt is images, then the last user prompt."""
    manager = ModelManager(demo_settings)
    manager.load(str(build_family("paligemma").path), quantization="none")
    try:
        assert not manager.processor.chat_template
        history = chat(picture(), text="caption en") + [{"role": "assistant", "content": [
            {"type": "text", "text": "a red square"}]}, {"role": "user", "content": [
                {"type": "text", "text": "answer en what colour"}]}]
        ids = ModelManager._inputs(manager.model, manager.processor, [history])["input_ids"][0]
        text = manager.processor.tokenizer.decode(ids[ids != manager.processor.image_token_id])
        assert text == "<bos>answer en what colour\n"
    finally:
        manager.unload()


def test_profile_lookup():
    assert profile_for("mllama").images_first and profile_for({"model_type": "paligemma"}).max_images == 1
    assert profile_for("no-such-family") is GENERIC
    assert unquantized_modules("qwen2_5_vl") == ["model.visual", "lm_head"]
    assert "lm_head" in unquantized_modules("something-new")
    import re

    targets = lora_target_modules("something-new")
    assert re.fullmatch(targets, "model.language_model.layers.3.self_attn.q_proj")
    assert not re.fullmatch(targets, "model.vision_tower.vision_model.encoder.layers.3.self_attn.q_proj")


def test_plan_shown_before_load_is_the_plan_load_used(family, loaded, demo_settings):
    from vlmchat.models.decide import decide_load
    from vlmchat.models.resolve import resolve_model

    shown = decide_load(resolve_model(str(family.path), demo_settings), demo_settings, "none")
    assert shown.key() == loaded.decision.key()
    assert shown.plan.unquantized == () and loaded.info.device == shown.plan.device
