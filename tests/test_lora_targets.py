"""The default LoRA config targets the family's language model, wherever the family keeps it.

SmolVLM (Idefics3) keeps its language model at `model.text_model`, not `model.language_model`; the
default targets used to be a `language_model` regex that matched nothing there.
"""

from __future__ import annotations

import pytest

from families import save_family
from vlmchat.lora.runtime import default_lora_config


@pytest.fixture(scope="module")
def smolvlm(tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    tiny = save_family("idefics3", tmp_path_factory.mktemp("idefics3"))
    return AutoModelForImageTextToText.from_pretrained(tiny.path)


@pytest.mark.parametrize("given", ["model", "config", "model_type", "nothing"])
def test_default_lora_goes_on_the_text_model_only(smolvlm, given):
    from peft import get_peft_model

    source = {"model": smolvlm, "config": smolvlm.config, "model_type": "idefics3", "nothing": None}[given]
    peft_model = get_peft_model(smolvlm, default_lora_config(source))
    try:
        wrapped = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
        layers = smolvlm.config.text_config.num_hidden_layers
        assert len(wrapped) == layers * 7  # q, k, v, o, gate, up, down in every decoder layer
        assert all(".model.text_model.layers." in name for name in wrapped)
    finally:
        peft_model.unload()
