"""LoRA adapters on the loaded demo model: swap at runtime, one copy of the base, PEFT interop."""

import pytest
from PIL import Image

from conftest import ROOT
from vlmchat.errors import InputError
from vlmchat.models.manager import ModelManager

DEMO_ES = ROOT / "adapters" / "demo-es"


def _ask(path, question="Describe the image."):
    return [{"role": "user", "content": [{"type": "image", "image": Image.open(path)},
                                         {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def with_spanish(demo_settings):
    manager = ModelManager(demo_settings)
    manager.load()
    manager.load_adapter("demo-es", DEMO_ES)
    yield manager
    manager.unload()


def _base_weights(model):
    return {n: p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}


def test_base_and_adapter_answer_from_one_model(with_spanish, picture_files):
    red_circle = picture_files[("red", "circle")]
    assert with_spanish.generate(_ask(red_circle)) == "a red circle"
    assert with_spanish.generate(_ask(red_circle), adapter="demo-es") == "un círculo rojo"
    assert with_spanish.generate(_ask(red_circle, "What color is the shape?"), adapter="demo-es") == "rojo"
    assert with_spanish.generate(_ask(red_circle), adapter="base") == "a red circle"


def test_swapping_never_copies_or_reloads_the_base(with_spanish, picture_files):
    before = _base_weights(with_spanish.model)
    for adapter in ("demo-es", None, "demo-es"):
        with_spanish.generate(_ask(picture_files[("blue", "square")]), adapter=adapter)
    assert _base_weights(with_spanish.model) == before


def test_unknown_adapter_is_refused(with_spanish, picture_files):
    with pytest.raises(InputError, match="not loaded"):
        with_spanish.generate(_ask(picture_files[("blue", "square")]), adapter="nope")


def test_two_resident_adapters_and_unload(demo_settings, tmp_path, picture_files):
    """A plain-PEFT adapter dropped into adapters/ sits beside demo-es; unloading one keeps the other."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    plain = get_peft_model(AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo"),
                           default_lora_config())
    plain.save_pretrained(tmp_path / "plain")  # LoRA B starts at zero: answers like the base
    manager = ModelManager(demo_settings)
    manager.load()
    manager.load_adapter("demo-es", DEMO_ES)
    manager.load_adapter("plain", tmp_path / "plain")
    assert manager.adapter_names() == ["demo-es", "plain"]
    red = picture_files[("red", "circle")]
    assert manager.generate(_ask(red), adapter="plain") == "a red circle"
    manager.activate_adapter("demo-es")
    manager.unload_adapter("demo-es")
    assert manager.adapter_names() == ["plain"] and manager.active_adapter is None
    manager.unload_adapter("plain")
    assert manager.adapter_names() == [] and manager.generate(_ask(red)) == "a red circle"


def test_vlmchat_adapter_loads_in_plain_peft(picture_files):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo")
    processor = AutoProcessor.from_pretrained(ROOT / "models" / "vlmchat-demo")
    model = PeftModel.from_pretrained(base, DEMO_ES)
    messages = [{"role": "user", "content": [{"type": "image", "image": Image.open(picture_files[("green", "triangle")])},
                                             {"type": "text", "text": "Describe the image."}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True) == "un triángulo verde"


def test_selection_survives_attaching_and_peft_own_switches(demo_settings, tmp_path, picture_files):
    """The model stays as last selected; attaching an adapter or switching through PEFT itself is noticed."""
    import shutil

    shutil.copytree(DEMO_ES, tmp_path / "es-2")
    manager = ModelManager(demo_settings)
    manager.load()
    manager.load_adapter("demo-es", DEMO_ES)
    red = picture_files[("red", "circle")]
    assert manager.generate(_ask(red)) == "a red circle"  # base selected: adapter layers disabled
    manager.load_adapter("es-2", tmp_path / "es-2")  # attached while the base is selected
    assert manager.generate(_ask(red)) == "a red circle"
    assert manager.generate(_ask(red), adapter="es-2") == "un círculo rojo"
    manager.model.disable_adapter_layers()  # PEFT's own API behind vlmchat's back
    assert manager.generate(_ask(red), adapter="es-2") == "un círculo rojo"
    manager.model.enable_adapter_layers()
    assert manager.generate(_ask(red)) == "a red circle"
    manager.unload_adapter("demo-es")
    assert manager.generate(_ask(red), adapter="es-2") == "un círculo rojo"
    assert manager.generate(_ask(red)) == "a red circle"
    manager.unload()


def _random_adapter(path, seed):
    """A LoRA adapter for the demo with random (non-zero) B: it changes every logit."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo"),
                           default_lora_config())
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    model.save_pretrained(path)
    return path


def _peft_logits(inputs, adapter_path, dtype="float32"):
    """The logits of the adapter loaded by plain PEFT on a fresh base (PEFT's own LoRA forward)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo", dtype=dtype)
    model = PeftModel.from_pretrained(base, adapter_path).eval() if adapter_path else base.eval()
    with torch.inference_mode():
        return model(**inputs).logits


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lean_lora_layers_answer_as_peft_and_follow_a_reattached_adapter(demo_settings, tmp_path, picture_files, dtype):
    """The lean forward vlmchat gives LoRA layers (decode speed) gives PEFT's logits for the base and each adapter
    (on a bf16 base PEFT keeps the adapter in float32), and an adapter detached and attached again under the
    same name answers with its new weights."""
    import torch

    from vlmchat.lora.runtime import use_adapter

    one, two = _random_adapter(tmp_path / "one", 1), _random_adapter(tmp_path / "two", 2)
    manager = ModelManager(demo_settings.override("model", dtype=dtype))
    manager.load()
    manager.load_adapter("demo-es", DEMO_ES)
    manager.load_adapter("x", one)
    model = manager.model
    assert str(model.dtype) == f"torch.{dtype}"
    inputs = ModelManager._inputs(model, manager.processor, [_ask(picture_files[("red", "circle")])])

    def logits(adapter):
        with torch.inference_mode(), use_adapter(model, adapter):
            return model(**inputs).logits

    def same(a, b):  # float32 weights are stored column-major: the sums may round otherwise
        return torch.equal(a, b) if dtype == "bfloat16" else torch.allclose(a, b, atol=1e-5)

    for adapter, path in (("x", one), ("demo-es", DEMO_ES), (None, None), ("x", one)):
        assert same(logits(adapter), _peft_logits(inputs, path, dtype)), adapter
    lora = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert lora and {type(m).__name__ for m in lora} == {"LeanLoraLinear"}
    calls = []  # a hook on a base layer after the first answers (as accelerate's offloading adds) is honoured
    hook = lora[0].base_layer.register_forward_hook(lambda module, args, out: calls.append(1))
    for adapter in ("x", None):
        logits(adapter)
    hook.remove()
    assert len(calls) == 2
    manager.unload_adapter("x")
    manager.load_adapter("x", two)  # the same name, other weights
    assert same(logits("x"), _peft_logits(inputs, two, dtype))
    assert not torch.allclose(logits("x"), _peft_logits(inputs, one, dtype), atol=1e-3)
    model.base_model.set_adapter(["x", "demo-es"])  # two active at once (PEFT's API): PEFT's own forward
    with torch.inference_mode():
        both = model(**inputs).logits
    assert not torch.allclose(both, logits("x"), atol=1e-3)
    with torch.no_grad():  # the adapter's weights changed in place: the lean layers use them as they are
        for name, parameter in model.named_parameters():
            if "lora_B.x." in name:
                parameter.mul_(0)
    assert same(logits("x"), logits(None)) and not same(logits("demo-es"), logits(None))
    manager.unload()


def test_an_adapter_renamed_or_deleted_on_disk_is_no_choice_and_a_damaged_one_never_loads(tmp_path, picture_files):
    """Resident under a name whose folder is gone (renamed, deleted), an adapter is unloaded and refused instead of
    answering; one whose weights do not load is said with its name, and nothing of it stays resident."""
    import shutil

    from conftest import write_settings
    from vlmchat.settings import load_settings

    settings = load_settings(write_settings(tmp_path))
    adapters = settings.paths.resolve("adapters")
    shutil.copytree(adapters / "demo-es", adapters / "zip1")
    manager = ModelManager(settings)
    manager.load()
    red = picture_files[("red", "circle")]
    manager.attach_named_adapter("zip1")  # as Chat, Caption, Compare and /v1 pick an adapter by name
    assert manager.generate(_ask(red), adapter="zip1") == "un círculo rojo"
    (adapters / "zip1").rename(adapters / "zip2")
    with pytest.raises(InputError, match="no adapter named 'zip1'"):
        manager.attach_named_adapter("zip1")
    assert "zip1" not in manager.adapter_names()
    damaged = tmp_path / "damaged"
    shutil.copytree(adapters / "demo-es", damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="Adapter 'damaged' could not be loaded"):
        manager.load_adapter("damaged", damaged)
    assert "damaged" not in manager.adapter_names()
    manager.attach_named_adapter("zip2")
    assert manager.generate(_ask(red), adapter="zip2") == "un círculo rojo"


def test_an_adapter_trained_again_over_a_loaded_one_answers_with_its_new_weights(demo_settings, tmp_path,
                                                                                   picture_files):
    """A fine-tune with overwrite replaces the adapter's folder while the app holds the old weights: it kept
    answering with them until someone pressed Unload (verifying reviewer). The next use now loads the new ones,
    and the adapter stays the default for new chats if it was."""
    import shutil

    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from vlmchat.lora.runtime import default_lora_config

    adapters = demo_settings.paths.resolve("adapters")
    shutil.copytree(DEMO_ES, adapters / "again")
    manager = ModelManager(demo_settings)
    try:
        manager.load()
        red = picture_files[("red", "circle")]
        manager.attach_named_adapter("again")
        manager.activate_adapter("again")
        assert manager.generate(_ask(red), adapter="again") == "un círculo rojo"
        plain = get_peft_model(AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo"),
                               default_lora_config())
        plain.save_pretrained(tmp_path / "retrained")  # LoRA B at zero: answers as the base does
        shutil.copy(DEMO_ES / "vlmchat.json", tmp_path / "retrained" / "vlmchat.json")
        shutil.rmtree(adapters / "again")
        shutil.copytree(tmp_path / "retrained", adapters / "again")  # as the trainer's staged folder lands
        manager.attach_named_adapter("again")
        assert manager.generate(_ask(red), adapter="again") == "a red circle"
        assert manager.active_adapter == "again" and manager.adapter_names() == ["again"]
        manager.attach_named_adapter("again")  # unchanged since: nothing is loaded again
        assert manager.generate(_ask(red), adapter="again") == "a red circle"
    finally:
        shutil.rmtree(adapters / "again", ignore_errors=True)
        manager.unload()


def test_one_row_steps_run_on_a_merged_copy_that_follows_the_adapter(demo_settings, tmp_path, picture_files):
    """On a CPU with memory to spare a one-row decode step runs on a copy of each adapter layer's weight with the
    adapter added in (decode as fast as the base): the same greedy tokens as the unmerged sum, one copy per layer
    (the adapter last used), made again when the adapter changes in place, dropped when adapters change."""
    import torch

    from vlmchat.lora.runtime import use_adapter

    manager = ModelManager(demo_settings)
    manager.load()
    manager.load_adapter("one", _random_adapter(tmp_path / "one", 1))
    manager.load_adapter("two", _random_adapter(tmp_path / "two", 2))
    model = manager.model
    inputs = ModelManager._inputs(model, manager.processor, [_ask(picture_files[("red", "circle")])])
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]

    def tokens(adapter, merge):
        with torch.inference_mode(), use_adapter(model, adapter):
            for layer in layers:
                layer.__dict__["_vlmchat_merge_steps"] = merge
            return model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False).tolist()

    def merged_is(adapter):
        for layer in layers:
            a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
            expected = layer.base_layer.weight + layer.scaling[adapter] * b @ a
            assert torch.allclose(layer.__dict__["_vlmchat_merged"][2], expected, atol=1e-5)
        return True

    weights = [layer.base_layer.weight.clone() for layer in layers]
    with use_adapter(model, "one"):  # this machine has the memory: chosen on its own
        assert all(layer.__dict__["_vlmchat_merge_steps"] is True for layer in layers)
    for adapter in ("one", "two", "one"):
        assert tokens(adapter, True) == tokens(adapter, False) != tokens(None, True)
        assert merged_is(adapter)  # the last adapter's copy only
    with torch.no_grad():
        for layer in layers:
            layer.lora_B["one"].weight.mul_(0)
    assert tokens("one", True) == tokens(None, True) and merged_is("one")
    assert all(torch.equal(layer.base_layer.weight, weight) for layer, weight in zip(layers, weights))  # untouched
    manager.unload_adapter("two")
    assert all("_vlmchat_merged" not in layer.__dict__ for layer in layers)
    manager.unload()


def test_merged_steps_need_a_cpu_and_memory_to_spare(monkeypatch):
    """A copy of the adapter layers' weights is made only on a CPU, up to 1 GiB (a 2B model's adapter costs little
    of its token) and when it takes at most a quarter of the free memory (a machine short of memory is simulated:
    psutil's reading is replaced)."""
    import types

    import psutil
    import torch

    from vlmchat.lora import runtime

    layer = types.SimpleNamespace(lora_A={}, base_layer=torch.nn.Linear(256, 256))  # 256 KiB of weight
    bytes_ = layer.base_layer.weight.nbytes
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=4 * bytes_))
    assert runtime._merge_steps_fit([layer])
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=4 * bytes_ - 1))
    assert not runtime._merge_steps_fit([layer])
    assert not runtime._merge_steps_fit([])
    monkeypatch.setattr(runtime, "MERGED_COPY_MAX", bytes_ - 1)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=2**40))
    assert not runtime._merge_steps_fit([layer])
    monkeypatch.setattr(runtime, "MERGED_COPY_MAX", bytes_)
    assert runtime._merge_steps_fit([layer])
    layer.base_layer.to("meta")  # a weight not on the CPU (a GPU's; the meta device stands for it here)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=2**40))
    assert not runtime._merge_steps_fit([layer])


def test_an_adapter_with_modules_to_save_sits_beside_the_others(demo_settings, tmp_path, picture_files):
    """A plain-PEFT adapter that also trained the projector (modules_to_save): once loaded, every other adapter
    failed ("Adapter demo-es not found in {'projector'}") until a restart (blind tester)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(ROOT / "models" / "vlmchat-demo")
    trained = get_peft_model(model, LoraConfig(r=2, target_modules=r".*language_model.*\.o_proj",
                                               modules_to_save=["multi_modal_projector"]))
    with torch.no_grad():  # its own projector: what it answers differs from the base
        for name, parameter in trained.named_parameters():
            if "modules_to_save" in name:
                parameter.mul_(-3)
    trained.save_pretrained(tmp_path / "projector")
    manager = ModelManager(demo_settings)
    manager.load()
    try:
        manager.load_adapter("demo-es", DEMO_ES)
        manager.load_adapter("projector", tmp_path / "projector")
        red = _ask(picture_files[("red", "circle")])
        own = manager.generate(red, adapter="projector")
        assert own != "a red circle"  # its projector is used
        for _ in range(2):  # and left out for the others, both ways round
            assert manager.generate(red, adapter="demo-es") == "un círculo rojo"
            assert manager.generate(red) == "a red circle"
            assert manager.generate(red, adapter="projector") == own
    finally:
        manager.unload()


def test_an_adapter_whose_shapes_do_not_fit_says_which_weight(demo_settings, tmp_path, picture_files):
    """torch's message starts "Error(s) in loading state_dict for PeftModel:" and names the weight and shapes on the
    next lines; only the first line was shown (blind tester)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    misfit = tmp_path / "misfit"
    shutil.copytree(DEMO_ES, misfit)
    weights = load_file(misfit / "adapter_model.safetensors")
    first = sorted(weights)[0]
    weights[first] = torch.zeros(weights[first].shape[0], weights[first].shape[1] * 2)
    save_file(weights, misfit / "adapter_model.safetensors")
    manager = ModelManager(demo_settings)
    manager.load()
    try:
        with pytest.raises(InputError, match=r"could not be loaded onto the loaded model: Error\(s\) in loading "
                                             r"state_dict for PeftModel: size mismatch for .*torch.Size"):
            manager.load_adapter("misfit", misfit)
        assert manager.adapter_names() == []  # its layers were left in the base, and it was listed as loaded
        red = _ask(picture_files[("red", "circle")])
        manager.load_adapter("demo-es", DEMO_ES)
        assert (manager.generate(red), manager.generate(red, adapter="demo-es")) == ("a red circle", "un círculo rojo")
    finally:
        manager.unload()
