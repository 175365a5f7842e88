"""The compiled decode step on a CUDA GPU (vlmchat/models/compiled.py): when it is used, and answers unchanged by it.

No GPU exists here, so these tests name the device: `plan` and `Compiled.decode` take `device_type="cuda"` and
the GPU's free bytes as arguments, on real models (a tiny Qwen2.5-VL from tests/families.py: the class that
compiles; the demo's LLaVA: one that is not compiled). transformers compiles only on a GPU; on the CPU the same
`generate` arguments run the static cache uncompiled, which is what the answer test checks (same answers,
through the manager's own batch and stream paths). The speed-up itself is measured on an H200 by
benchmarks/realsize/gpu_figures.py --only compiled (RESULTS.md).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlmchat.models.compiled import MIN_NEW_TOKENS, STEP, Compiled, cache_bytes, cache_length, plan
from vlmchat.models.manager import GenerationParams, context_tokens

ROOMY = 2**40  # bytes free on the named GPU


def test_cache_lengths_are_multiples_of_the_step_up_to_the_context():
    assert cache_length(1, None) == STEP and cache_length(STEP, None) == STEP
    assert cache_length(STEP + 1, None) == 2 * STEP  # one more compile past the first step, not one per answer
    assert cache_length(300, 1024) == 1024  # the demo's context is shorter than a step


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A ModelManager with a tiny random Qwen2.5-VL loaded (on the CPU)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from families import save_family
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    folder = tmp_path_factory.mktemp("qwen2_5_vl")
    family = save_family("qwen2_5_vl", folder)
    if family.missing:
        pytest.skip(f"Qwen2.5-VL's processor needs {family.missing}")
    manager = ModelManager(load_settings().override("model", device="cpu"))
    manager.load(str(folder))
    return manager


def _tiny_ask(text: str = "Describe the image.") -> list[dict]:
    picture = Image.new("RGB", (32, 32), (255, 0, 0))
    return [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": text}]}]


def test_a_one_row_base_answer_on_a_gpu_is_compiled_and_the_rest_say_why_not(qwen, manager):
    model, limit = qwen.model, context_tokens(qwen.model)
    found = plan(model, "auto", 1, 300, None, limit, device_type="cuda", free_bytes=ROOMY)
    assert found.compiled and found.kwargs == {"cache_implementation": "static", "max_cache_len": STEP}
    why_not = {
        "cpu": plan(model, "auto", 1, 300, None, limit),  # this machine: the model's own device
        "off": plan(model, "off", 1, 300, None, limit, device_type="cuda", free_bytes=ROOMY),
        "rows": plan(model, "auto", 5, 300, None, limit, device_type="cuda", free_bytes=ROOMY),
        "adapter": plan(model, "auto", 1, 300, "demo-es", limit, device_type="cuda", free_bytes=ROOMY),
        "context": plan(model, "auto", 1, 300, None, 256, device_type="cuda", free_bytes=ROOMY),
        "memory": plan(model, "auto", 1, 300, None, limit, device_type="cuda",
                       free_bytes=2 * cache_bytes(model, STEP) - 1),
        # the demo's LLaVA: not among the classes measured to compile through the app
        "class": plan(manager.model, "auto", 1, 300, None, 1024, device_type="cuda", free_bytes=ROOMY),
    }
    assert not any(choice.compiled for choice in why_not.values())
    assert "CUDA" in why_not["cpu"].reason and "off" in why_not["off"].reason
    assert "5 rows" in why_not["rows"].reason and "adapter" in why_not["adapter"].reason
    assert "context" in why_not["context"].reason and "free" in why_not["memory"].reason
    assert "LlavaForConditionalGeneration" in why_not["class"].reason
    # the demo: 4 layers x 4 heads x 32 dims, keys and values, float32, 1,024 positions
    assert cache_bytes(manager.model, 1024) == 2 * 4 * 4 * 32 * 1024 * 4


def test_the_loaded_models_summary_says_when_chats_first_answer_compiles(qwen, manager):
    from vlmchat.models.compiled import load_note

    note = load_note(qwen.model, "auto", context_tokens(qwen.model), device_type="cuda", free_bytes=ROOMY)
    assert "first answer compiles" in note and "off" in note
    assert load_note(qwen.model, "off", None, device_type="cuda", free_bytes=ROOMY) == ""
    assert load_note(manager.model, "auto", 1024, device_type="cuda", free_bytes=ROOMY) == ""  # LLaVA: not compiled
    assert "compiles" not in qwen.info.reason  # loaded on this CPU


def test_a_failed_compile_is_blamed_once_the_same_answer_works_without_it(qwen, capsys):
    compiled, tries = Compiled(), []

    def broken(kwargs):
        tries.append(kwargs)
        raise RuntimeError("Cannot find a working triton installation.\nmore lines")

    ask = functools.partial(compiled.decode, qwen.model, "auto", 1, 200, None, None, broken,
                            device_type="cuda", free_bytes=ROOMY)
    first = ask()
    assert not first.compiled and "triton" in first.reason and not compiled.broken
    compiled.settle(worked=False)  # the answer failed too (out of memory, a bad input): nothing is blamed
    assert not ask().compiled and len(tries) == 2 and not compiled.broken and not capsys.readouterr().err.count("failed")
    compiled.settle(worked=True)  # the same answer worked with the dynamic cache: the compile is blamed, once
    again = ask()
    assert not again.compiled and len(tries) == 2 and "triton" in again.reason
    said = capsys.readouterr().err
    assert said.count("compiling failed") == 1 and 'compile = "off"' in said
    # an answer of a few tokens is never compiled (an eval's one-token answer would wait ~30 s for nothing)
    short = Compiled().decode(qwen.model, "auto", 1, 200, None, None, broken, new_tokens=1, device_type="cuda",
                              free_bytes=ROOMY)
    assert not short.compiled and "too few" in short.reason and len(tries) == 2


def _zero_adapter(manager, folder: Path) -> Path:
    """A LoRA adapter (the default config, B = 0: answers as the base) for the manager's model, saved to `folder`."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    skeleton = AutoModelForImageTextToText.from_config(manager.model.config)
    get_peft_model(skeleton, default_lora_config(skeleton)).save_pretrained(folder)
    return folder


def test_answers_are_the_same_through_the_static_cache_and_the_warm_up_runs_once_per_length(qwen, monkeypatch,
                                                                                          tmp_path):
    """The manager's batch and stream paths with the GPU's choice taken (here uncompiled: see the module's text)."""
    params = GenerationParams(max_new_tokens=MIN_NEW_TOKENS)
    plain = qwen.answer_batch([_tiny_ask()], params)[0]
    streamed_plain = list(qwen.stream_answer(_tiny_ask("What shape is this?"), params))[-1]
    warmed, decode = [], Compiled.decode

    def on_gpu(self, model, setting, rows, needed, adapter, limit, warm, new_tokens=MIN_NEW_TOKENS, **where):
        def counted(kwargs):
            warmed.append(kwargs["max_cache_len"])
            return warm(kwargs)
        return decode(self, model, setting, rows, needed, adapter, limit, counted, new_tokens, device_type="cuda",
                      free_bytes=ROOMY)

    monkeypatch.setattr(Compiled, "decode", on_gpu)
    caches, generate = [], qwen.model.generate

    def recorded(*args, **kwargs):
        caches.append(kwargs.get("cache_implementation"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(qwen.model, "generate", recorded)
    static = qwen.answer_batch([_tiny_ask()], params, "base")[0]
    streamed = list(qwen.stream_answer(_tiny_ask("What shape is this?"), params))[-1]
    assert (static.text, static.completion_tokens) == (plain.text, plain.completion_tokens)
    assert static.completion_tokens > 1 and streamed.text == streamed_plain.text
    assert warmed == [STEP]  # the second answer reused the first one's cache length
    two = qwen.answer_batch([_tiny_ask(), _tiny_ask("What shape is this?")], params)  # a batch: dynamic cache
    assert two[0].text == plain.text and warmed == [STEP]
    assert caches == ["static"] * 3 + [None]  # the warm-up, the answer, the streamed answer; the batch of two
    # attaching an adapter changes the layers a compiled step traced: the next base answer warms up (compiles) again;
    # the adapter's own answer keeps the dynamic cache
    qwen.load_adapter("zero", _zero_adapter(qwen, tmp_path / "zero"))
    try:
        caches.clear()
        assert qwen.answer_batch([_tiny_ask()], params, "zero")[0].text == plain.text
        assert qwen.answer_batch([_tiny_ask()], params)[0].text == plain.text
        assert warmed == [STEP, STEP] and caches == [None, "static", "static"]
    finally:
        qwen.unload_adapter("zero")


@pytest.mark.parametrize("value", ["on", "yes"])
def test_the_setting_takes_auto_or_off(tmp_path, value):
    from vlmchat.errors import SettingsError
    from vlmchat.settings import load_settings

    file = tmp_path / "settings.toml"
    file.write_text(f'[model]\ncompile = "{value}"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match="compile"):
        load_settings(file)
    file.write_text('[model]\ncompile = "off"\n', encoding="utf-8")
    assert load_settings(file).model.compile == "off"
