"""Model folders built from published configs (benchmarks/realsize/) load like downloaded models.

Fast tests build the shrunk version of each config (1 layer, width 64, real vocabulary, real
processor) and go through the paths a user takes: the model manager, `launch.py plan`. The
real-size build, checked against the catalog's parameter counts, is marked slow.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from vlmchat.models.manager import GenerationParams, ModelManager


def _builder():
    spec = importlib.util.spec_from_file_location("realsize_build", ROOT / "benchmarks" / "realsize" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _builder()
# image tokens of one 512x512 picture with the published processor settings:
# SmolVLM upscales to 2048 px, 4x4 tiles of 512 + the global image, 64 tokens each;
# Qwen2-VL resizes to 504x504 = 36x36 patches of 14 px, merged 2x2 -> 18x18.
# Llama 3.2 Vision: one <|image|> token (the tiles go through cross-attention); Chameleon: 32x32 VQ codes.
IMAGE_TOKENS_512 = {"smolvlm-256m": 17 * 64, "smolvlm-500m": 17 * 64, "qwen2-vl-2b": 18 * 18,
                    "llama-3.2-11b-vision": 1, "qwen2.5-vl-7b": 18 * 18, "chameleon-7b": 32 * 32}


@pytest.fixture(scope="module", params=build.MODELS)
def shrunk(request, tmp_path_factory):
    """(name, folder) of the shrunk build."""
    return request.param, build.build(request.param, tmp_path_factory.mktemp(request.param), shrink=True)


@pytest.fixture(scope="module", params=build.MODELS + build.GPU_MODELS)
def processor_only(request, tmp_path_factory):
    """(name, processor) of every config, GPU ones included: tokenizer and processor files, no weights."""
    from transformers import AutoProcessor

    folder = tmp_path_factory.mktemp(request.param + "-processor")
    build.write_processor(request.param, folder)
    return request.param, AutoProcessor.from_pretrained(folder)


def test_tokenizer_has_the_real_size_and_special_ids(processor_only):
    name, processor = processor_only
    tokenizer, spec = processor.tokenizer, build.tokenizer_spec(name)
    assert len(tokenizer) == spec["vocab_size"]
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in spec["tokens"]} == spec["tokens"]
    config = build.model_config(name)
    image_id = config.get("image_token_id", config.get("image_token_index"))
    assert tokenizer.convert_ids_to_tokens(image_id) == spec["extra_special_tokens"]["image_token"]
    assert tokenizer.decode(tokenizer("Describe the image.", add_special_tokens=False)["input_ids"]) == "Describe the image."


def test_the_processor_expands_a_picture_as_published(processor_only):
    from vlmchat.models.families import profile_for

    name, processor = processor_only
    profile = profile_for(build.model_config(name))
    template = {"chat_template": profile.chat_template} if profile.needs_template(processor) else {}
    ask = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (512, 512), "red")},
                                        {"type": "text", "text": "Describe the image."}]}]
    inputs = processor.apply_chat_template(ask, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", **template)
    image_id = processor.tokenizer.convert_tokens_to_ids(build.tokenizer_spec(name)["extra_special_tokens"]["image_token"])
    assert int((inputs["input_ids"] == image_id).sum()) == IMAGE_TOKENS_512[name]


def test_manager_loads_the_shrunk_model_and_answers_about_a_picture(shrunk, demo_settings):
    name, folder = shrunk
    manager = ModelManager(demo_settings)
    manager.load(str(folder), quantization="none")
    try:
        ask = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (512, 512), "red")},
                                            {"type": "text", "text": "Describe the image."}]}]
        inputs = manager._inputs(manager.model, manager.processor, [ask])
        image_id = manager.model.config.image_token_id
        assert int((inputs["input_ids"] == image_id).sum()) == IMAGE_TOKENS_512[name]
        assert isinstance(manager.generate(ask, GenerationParams(max_new_tokens=3)), str)
    finally:
        manager.unload()


def test_plan_reads_the_folder(shrunk):
    name, folder = shrunk
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), "plan", "--model", str(folder)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "safetensors headers" in result.stdout


# Parameter counts of the published models (billions), as settings.toml's catalog and the model cards give them.
PUBLISHED = {"smolvlm-256m": (0.163, 0.094), "smolvlm-500m": (0.409, 0.098)}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_real_size_build_has_the_published_parameter_counts(name, tmp_path):
    from vlmchat.models.sizes import size_from_folder

    size = size_from_folder(build.build(name, tmp_path / name))
    language, vision = PUBLISHED[name]
    assert size.language_b == pytest.approx(language, abs=0.001)
    assert size.vision_b == pytest.approx(vision, abs=0.001)
