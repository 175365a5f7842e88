"""Image detail (low / auto / high): fewer image tokens at low, auto choosing by device and memory.

On the published processors of SmolVLM and Qwen2-VL (benchmarks/realsize/configs, built offline) and on
the tiny LLaVA-NeXT of tests/families.py: a 512x512 picture becomes fewer image tokens at low than at high.
"""

from __future__ import annotations

import importlib.util

import pytest
from PIL import Image

from conftest import ROOT
from families import save_family
from vlmchat.models.families import (PROFILES, choose_detail, detail_kwargs, enough_short_side, profile_for,
                                     shrink_pictures)


def _realsize_build():
    spec = importlib.util.spec_from_file_location("realsize_build", ROOT / "benchmarks" / "realsize" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    """model_type -> the processor: SmolVLM's and Qwen2-VL's published ones, the tiny LLaVA-NeXT's."""
    from transformers import AutoProcessor

    build = _realsize_build()
    found = {}
    for name, model_type in (("smolvlm-256m", "idefics3"), ("qwen2-vl-2b", "qwen2_vl")):
        folder = tmp_path_factory.mktemp(name)
        build.write_processor(name, folder)
        found[model_type] = AutoProcessor.from_pretrained(folder)
    found["llava_next"] = AutoProcessor.from_pretrained(save_family("llava_next", tmp_path_factory.mktemp("next")).path)
    return found


def _image_tokens(processor, model_type: str, detail: str, size=(512, 512)) -> int:
    kwargs, max_edge = detail_kwargs(PROFILES[model_type], processor, detail)
    ask = [[{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", size, "red")},
                                         {"type": "text", "text": "Describe the image."}]}]]
    inputs = processor.apply_chat_template(shrink_pictures(ask, max_edge), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt",
                                           processor_kwargs={"padding": True, **kwargs})
    return int((inputs["input_ids"] == processor.image_token_id).sum())


@pytest.mark.parametrize("model_type, low, high", [("idefics3", 64, 17 * 64), ("qwen2_vl", 256, 18 * 18),
                                                   ("llava_next", 16 + 16 + 4, None)])
def test_low_detail_makes_fewer_image_tokens(processors, model_type, low, high):
    processor = processors[model_type]
    assert _image_tokens(processor, model_type, "low") == low
    high_tokens = _image_tokens(processor, model_type, "high")
    assert high_tokens > low and high in (None, high_tokens)
    on_cpu, _ = choose_detail("auto", PROFILES[model_type], "cpu")
    on_gpu, _ = choose_detail("auto", PROFILES[model_type], "cuda:0", free_gib=40.0)
    assert _image_tokens(processor, model_type, on_cpu) == low
    assert _image_tokens(processor, model_type, on_gpu) == high_tokens


@pytest.mark.parametrize("device, free, expected", [("cpu", None, "low"), ("cuda:0", 40.0, "high"),
                                                    ("cuda:0", 1.0, "low"), ("mps", None, "high")])
def test_auto_chooses_by_device_and_memory_and_says_why(device, free, expected):
    detail, reason = choose_detail("auto", profile_for("idefics3"), device, free)
    assert detail == expected
    assert reason.startswith("auto") and expected in reason


def test_a_set_detail_is_kept_and_a_one_size_family_says_so():
    assert choose_detail("high", profile_for("qwen2_vl"), "cpu")[0] == "high"
    assert choose_detail("low", profile_for("qwen2_vl"), "cuda:0", 80.0)[0] == "low"
    detail, reason = choose_detail("low", profile_for("llava"), "cpu")
    assert detail == "high" and "changes nothing" in reason
    with pytest.raises(ValueError, match="low, auto, high"):
        choose_detail("medium", profile_for("llava"), "cpu")


@pytest.mark.parametrize("size", [(6000, 4500), (6000, 400), (400, 6000)])
@pytest.mark.parametrize("model_type", ["idefics3", "qwen2_vl", "llava_next", "llava"])
def test_a_large_picture_is_shrunk_to_what_the_processor_reads_and_makes_the_same_input(processors, model_type, size):
    """A picture is shrunk to twice the largest edge its processor works at before the processor sees it: a 7999 x 400
    picture cost the demo's LLaVA processor 488 MB (padded to a square of its long side) for a 64 x 64 input. What
    the processor makes of it stays the same: as many image tokens, pixel values of the same shape."""
    from transformers import AutoProcessor

    processor = processors.get(model_type) or AutoProcessor.from_pretrained(ROOT / "models" / "vlmchat-demo")
    short = enough_short_side(processor, PROFILES[model_type])
    assert (short is None) == (model_type == "qwen2_vl")  # Qwen2-VL reads a pixel budget: images.WORKING_PIXELS
    picture = Image.new("RGB", size, "red")
    for detail in ("low", "high"):
        kwargs, max_edge = detail_kwargs(PROFILES[model_type], processor, detail)
        made = []
        for side in (None, short):
            ask = [[{"role": "user", "content": [{"type": "image", "image": picture},
                                                 {"type": "text", "text": "Describe the image."}]}]]
            inputs = processor.apply_chat_template(shrink_pictures(ask, max_edge, side), add_generation_prompt=True,
                                                   tokenize=True, return_dict=True, return_tensors="pt",
                                                   processor_kwargs={"padding": True, **kwargs})
            made.append((int((inputs["input_ids"] == processor.image_token_id).sum()),
                         tuple(inputs["pixel_values"].shape)))
        assert made[0] == made[1], (detail, made)


def test_shrink_pictures_leaves_the_original_and_small_pictures_alone():
    big, small = Image.new("RGB", (800, 400)), Image.new("RGB", (20, 20))
    conversation = [[{"role": "user", "content": [{"type": "image", "image": big}, {"type": "image", "image": small},
                                                  {"type": "text", "text": "hi"}]}]]
    shrunk = shrink_pictures(conversation, 32)[0][0]["content"]
    assert shrunk[0]["image"].size == (32, 16) and big.size == (800, 400)
    assert shrunk[1]["image"] is small and shrunk[2] == {"type": "text", "text": "hi"}


def test_the_plan_counts_image_tokens_from_the_detail(tmp_path):
    import json

    from vlmchat.models.sizes import picture_tokens

    build = _realsize_build()
    build.write_processor("smolvlm-256m", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(build.model_config("smolvlm-256m")), encoding="utf-8")
    assert (picture_tokens(tmp_path, "low"), picture_tokens(tmp_path, "high")) == (64, 17 * 64)
    assert picture_tokens(tmp_path / "nothing-here", "high") is None


def test_the_manager_answers_at_the_detail_asked_for(tmp_path, demo_settings):
    """Through ModelManager on the tiny Idefics3: low sends fewer image tokens than high, and both answer."""
    from vlmchat.models.manager import GenerationParams, ModelManager

    manager = ModelManager(demo_settings)
    manager.load(str(save_family("idefics3", tmp_path).path), quantization="none")
    try:
        ask = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (512, 512), "red")},
                                            {"type": "text", "text": "Describe the image."}]}]
        token = manager.processor.image_token_id
        counts = {level: int((ModelManager._inputs(manager.model, manager.processor, [ask], manager.detail(level))
                              ["input_ids"] == token).sum()) for level in ("low", "high")}
        assert counts["low"] < counts["high"]
        assert manager.detail().detail == "low"  # auto on the CPU
        for level in ("low", "high"):
            assert isinstance(manager.generate(ask, GenerationParams(max_new_tokens=2, image_detail=level)), str)
    finally:
        manager.unload()


@pytest.mark.parametrize("model_type, low", [("idefics3", 64), ("llava_next", 16 + 16 + 4)])
def test_fine_tune_samples_are_encoded_at_the_detail_chat_uses(processors, tmp_path, model_type, low):
    """An adapter learns from the image tokens it will answer from: on the CPU (auto = low) SmolVLM trains on
    one tile of 64 tokens, not 17 tiles of 1,088, and the labels are still the answer alone."""
    from vlmchat.finetune.batches import EncodedSamples
    from vlmchat.finetune.datasets import Sample
    from vlmchat.finetune.formats import caption_turns
    from vlmchat.models.families import DetailChoice

    processor = processors[model_type]
    picture = tmp_path / "red.png"
    Image.new("RGB", (512, 512), "red").save(picture)
    messages, images = caption_turns(str(picture), "un cuadrado rojo", "Describe the image.")
    samples = [Sample(messages, images, "captions.jsonl:1")]
    tokens = {}
    for detail in ("low", "high"):
        kwargs, max_edge = detail_kwargs(PROFILES[model_type], processor, detail)
        example = EncodedSamples(samples, processor, 4096, DetailChoice(detail, kwargs, max_edge)).get(0)
        tokens[detail] = int((example["input_ids"] == processor.image_token_id).sum())
        learned = processor.tokenizer.decode(example["labels"][example["labels"] != -100])
        assert "un cuadrado rojo" in learned and "Describe" not in learned
    assert tokens["low"] == low < tokens["high"]
