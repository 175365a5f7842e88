"""The quantization plan: a pure function, tested with no GPU; sizes from the catalog and safetensors headers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from hub_server import hub  # noqa: F401  (a fixture)
from vlmchat.errors import SettingsError
from vlmchat.models.plan import ModelSize, estimate, plan_quantization, read_free_memory
from vlmchat.settings import Settings, load_settings
from vlmchat.models.sizes import catalog_entry, model_size_for, size_from_catalog, size_from_folder

LLAMA = "meta-llama/Llama-3.2-11B-Vision-Instruct"


@pytest.fixture(scope="module")
def llama() -> ModelSize:
    return size_from_catalog(catalog_entry(Settings(), LLAMA))


@pytest.mark.parametrize("vram, bits, offload", [(8, 16, True), (12, 4, False), (16, 8, False), (23.6, 8, False),
                                                 (24, 16, False), (80, 16, False)])
def test_llama_11b_vision_precision_by_card_size(llama, vram, bits, offload):
    plan = plan_quantization(llama, {"cuda:0": vram, "cpu": 64.0}, device_name="RTX 3090")
    assert plan.ok and plan.bits == bits and (plan.offload_gib > 0) is offload
    assert plan.reason.startswith(f"RTX 3090, {vram:.1f} GiB free: Llama-3.2-11B-Vision-Instruct in bf16 needs ~")
    if offload:  # a bitsandbytes model with layers in RAM does not load: the offloaded model is bf16
        assert "-> bf16 with part of the layers offloaded to system RAM, not quantized" in plan.reason
    else:
        assert plan.reason.endswith({4: "-> 4-bit", 8: "-> 8-bit", 16: "-> bf16"}[bits])
    if bits < 16:
        assert "model.vision_model" in " ".join(plan.unquantized) or ".*vision_model" in plan.unquantized
    else:
        assert plan.unquantized == ()
    if offload:
        assert plan.warning and plan.device_map == "auto" and set(plan.max_memory) == {0, "cpu"}
    else:
        assert not plan.warning and plan.device_map == "cuda:0" and plan.estimate_gib <= vram


def test_reason_reads_like_the_issue_example(llama):
    plan = plan_quantization(llama, {"cuda:0": 23.6, "cpu": 64.0}, device_name="RTX 3090")
    assert plan.reason == ("RTX 3090, 23.6 GiB free: Llama-3.2-11B-Vision-Instruct in bf16 needs ~23.9 GiB "
                           "with headroom; 8-bit needs ~15.0 GiB -> 8-bit")
    assert plan.headroom_gib == pytest.approx(23.6 - plan.estimate_gib, abs=0.01)
    # the reason rounds as the options do ("needs ~1 GiB with headroom" above "options: bf16 ~1.4 GiB")
    assert [f"{label} needs ~{need:.1f} GiB" in plan.reason for label, need in plan.alternatives] == [True, True, False]


def test_offload_is_explained_with_numbers_that_add_up(llama):
    """The issue's case: Llama-3.2-11B on an 8 GiB card. bitsandbytes cannot load a 4-bit model with layers in RAM
    (measured on an H200: "Tensor.item() cannot be called on meta tensors"), so the offloaded model is bf16."""
    import re

    plan = plan_quantization(llama, {"cuda:0": 8.0, "cpu": 64.0}, device_name="an 8 GiB GPU")
    assert plan.ok and (plan.bits, plan.dtype, plan.quantization, plan.unquantized) == (16, "bfloat16", "none", ())
    assert "not quantized: bitsandbytes cannot load a 4-bit or 8-bit model with part of it in system RAM" in plan.reason
    assert "bitsandbytes issue #1525" in plan.reason and "an offloaded model runs unquantized" in plan.reason
    assert "several times slower" in plan.warning and "even in 4-bit" in plan.warning
    numbers = re.search(r"Of the ([\d.]+) GiB of bf16 weights, ([\d.]+) GiB go to system RAM and ([\d.]+) GiB to the "
                        r"GPU, which holds ([\d.]+) GiB \(([\d.]+) GiB of weights \+ ([\d.]+) GiB for the context, "
                        r"images and CUDA: the 8.0 GiB free less 10% headroom\)$", plan.reason)
    assert numbers, plan.reason
    weights, ram, gpu_weights, gpu, gpu_weights_again, runtime = map(float, numbers.groups())
    assert weights == pytest.approx(ram + gpu_weights) and gpu == pytest.approx(gpu_weights + runtime)
    assert gpu_weights_again == gpu_weights and gpu == pytest.approx(8.0 / 1.1, abs=0.11)
    # RAM holds bf16 layers: the bf16 weights less what the GPU holds
    assert weights == pytest.approx(estimate(llama, 16).weights_gib, abs=0.05)
    assert ram == pytest.approx(plan.offload_gib, abs=0.11) and plan.max_memory["cpu"] >= plan.offload_gib
    assert plan.max_memory[0] == pytest.approx(gpu_weights, abs=0.06)
    kwargs = plan.load_kwargs()  # accelerate's big-model inference: no bitsandbytes
    assert "quantization_config" not in kwargs and kwargs["device_map"] == "auto"
    assert set(kwargs["max_memory"]) == {0, "cpu"}


def test_offload_in_float32_keeps_float32(llama):
    plan = plan_quantization(llama, {"cuda:0": 8.0, "cpu": 128.0}, dtype="float32")
    assert plan.ok and (plan.bits, plan.dtype, plan.unquantized) == (32, "float32", ()) and plan.offload_gib > 0
    assert "-> float32 with part of the layers offloaded" in plan.reason
    assert plan.offload_gib == pytest.approx(estimate(llama, 32, "float32").weights_gib - plan.max_memory[0], abs=0.05)


@pytest.mark.parametrize("policy", ["4bit", "8bit"])
def test_a_forced_quantization_that_does_not_fit_is_refused_with_what_to_do(llama, policy):
    """bitsandbytes cannot offload: a 4bit/8bit chosen in settings that does not fit the GPU is not offloaded."""
    label = f"{policy[0]}-bit"
    plan = plan_quantization(llama, {"cuda:0": 8.0, "cpu": 64.0}, policy, device_name="an 8 GiB GPU")
    assert not plan.ok and plan.bits == int(policy[0]) and plan.offload_gib == 0 and plan.device_map is None
    assert plan.summary().startswith("Llama-3.2-11B-Vision-Instruct: cannot be loaded here")
    assert plan.reason.startswith(f"an 8 GiB GPU, 8.0 GiB free: Llama-3.2-11B-Vision-Instruct in {label} needs ~")
    assert (f"GiB with headroom: it does not fit (quantization = {policy} chosen), and bitsandbytes cannot load a "
            "4-bit or 8-bit model with part of it in system RAM (4-bit CPU offload fails: bitsandbytes issue #1525). "
            "Set quantization to auto or none to offload unquantized layers to system RAM (bf16, ~14.4 GiB there; "
            "answers several times slower), or free GPU memory, use a smaller model, or lower the context budget."
            ) in plan.reason
    assert plan_quantization(llama, {"cuda:0": 8.0, "cpu": 64.0}).offload_gib == pytest.approx(14.43, abs=0.01)
    # without the RAM for the unquantized layers, auto/none is not advised; the numbers say why
    short = plan_quantization(llama, {"cuda:0": 8.0, "cpu": 8.0}, policy).reason
    assert "Set quantization to auto" not in short and "Free GPU memory, use a smaller model" in short
    assert "would need ~14.4 GiB of system RAM for bf16 layers; 8.0 GiB free" in short
    # it still loads quantized where it fits
    assert plan_quantization(llama, {"cuda:0": 24.0, "cpu": 64.0}, policy).ok


def test_a_forced_8bit_that_does_not_fit_where_4bit_does_says_to_take_4bit_not_to_offload(llama):
    """12 GiB: 8-bit (~15 GiB) does not fit, 4-bit (~10.7) does; offloading bf16 layers to RAM (answers several
    times slower) was the advice (reviewer)."""
    plan = plan_quantization(llama, {"cuda:0": 12.0, "cpu": 64.0}, "8bit")
    assert not plan.ok and plan.reason.endswith(": it does not fit (quantization = 8bit chosen), and 4-bit does (~"
                                                f"{plan_quantization(llama, {'cuda:0': 12.0}, '4bit').estimate_gib:.1f} "
                                                "GiB with headroom): set quantization to 4bit or auto.")
    assert plan_quantization(llama, {"cuda:0": 12.0, "cpu": 64.0}, "4bit").ok


SMALL = ModelSize("SmolVLM-256M", 0.163, 0.094, 0.057, 22.5)


@pytest.mark.parametrize("policy", ["auto", "none", "8bit", "4bit"])
def test_no_plan_offloads_a_quantized_model(policy):
    """No plan, loadable or refused, combines 4/8 bits with layers in system RAM (bitsandbytes issue #1525)."""
    settings = load_settings(ROOT / "settings.toml")
    sizes = [size_from_catalog(entry) for entry in settings.catalog] + [SMALL]
    offloaded = 0
    for size in sizes:
        for vram in (4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 80):
            for ram in (8.0, 32.0, 128.0):
                for dtype, bnb in ((None, True), (None, False), ("float16", True), ("float32", True)):
                    plan = plan_quantization(size, {"cuda:0": float(vram), "cpu": ram}, policy, dtype=dtype,
                                             bnb_available=bnb)
                    case = (size.name, vram, ram, policy, dtype, bnb, plan.reason)
                    if plan.bits < 16:
                        assert plan.offload_gib == 0 and plan.device_map != "auto" and not plan.max_memory, case
                    if plan.offload_gib > 0:
                        offloaded += 1
                        assert plan.ok and plan.bits == (32 if dtype == "float32" else 16), case
                        assert plan.quantization == "none" and plan.unquantized == () and plan.device_map == "auto"
                        assert "cpu" in plan.max_memory and "several times slower" in plan.warning, case
                    if policy in ("8bit", "4bit") and not plan.ok:  # refused with what to do, and the advice holds
                        if plan.reason.endswith("set quantization to 4bit or auto."):
                            assert plan_quantization(size, {"cuda:0": float(vram)}, "4bit", dtype=dtype).ok, case
                            continue
                        assert plan.bits == int(policy[0]) and ("Free GPU memory" in plan.reason or
                                                                "Set quantization to auto or none" in plan.reason), case
                        advised = plan_quantization(size, {"cuda:0": float(vram), "cpu": ram}, "none", dtype=dtype)
                        assert advised.ok is ("Set quantization to auto or none" in plan.reason), case
    assert offloaded > 0 if policy in ("auto", "none") else offloaded == 0


def test_a_quantized_plan_edited_to_offload_is_not_loaded(llama):
    import dataclasses

    plan = plan_quantization(llama, {"cuda:0": 16.0, "cpu": 64.0})
    assert plan.bits == 8 and plan.load_kwargs()["quantization_config"].llm_int8_enable_fp32_cpu_offload is False
    edited = dataclasses.replace(plan, device_map="auto", max_memory={0: 5.0, "cpu": 60.0}, offload_gib=9.0)
    with pytest.raises(ValueError, match="cannot be offloaded to system RAM"):
        edited.load_kwargs()


@pytest.mark.parametrize("number, spoken", [("8", "an"), ("80", "an"), ("8.5", "an"), ("11", "an"), ("18", "an"),
                                            ("11000", "an"), ("6", "a"), ("16", "a"), ("24", "a"), ("110", "a"),
                                            ("1.8", "a"), ("181", "a")])
def test_the_article_goes_by_how_the_number_is_spoken(number, spoken):
    from vlmchat.models.plan import article

    assert article(number) == spoken


def test_estimates_shrink_with_bits_and_grow_with_context_and_images(llama):
    full, eight, four = (estimate(llama, bits).need_gib for bits in (16, 8, 4))
    assert full > eight > four
    assert estimate(llama, 16, context_tokens=32768).need_gib > full
    assert estimate(llama, 16, images=4).need_gib > full
    # bf16 weights alone: 10.643e9 params * 2 bytes.
    assert estimate(llama, 16).weights_gib == pytest.approx(10.643e9 * 2 / 2**30, rel=1e-3)


def test_vision_and_embeddings_stay_16_bit_when_quantized(llama):
    kept = (llama.vision_b + llama.embeddings_b) * 2e9 / 2**30
    assert estimate(llama, 4).weights_gib > kept
    assert estimate(llama, 4).weights_gib < kept + (llama.language_b - llama.embeddings_b) * 0.6e9 / 2**30


def test_nothing_fits_and_no_ram_to_offload_is_a_refusal_with_numbers(llama):
    plan = plan_quantization(llama, {"cuda:0": 4.0, "cpu": 6.0})
    assert not plan.ok and "nothing fits" in plan.reason and "4.0 GiB free" in plan.reason
    assert "4-bit needs ~10.7 GiB" in plan.reason
    # the RAM an offload needs is for unquantized (bf16) layers: bitsandbytes cannot offload
    bf16_ram = (estimate(llama, 16).need_gib - 4.0) / 1.1
    assert f"offloading ~{bf16_ram:.1f} GiB of bf16 layers to system RAM (6.0 GiB free, 2 GiB kept" in plan.reason
    assert "an offloaded model runs unquantized" in plan.reason and "bitsandbytes issue #1525" in plan.reason
    assert plan.offload_gib == 0 and plan.device_map is None
    # 20 GiB of RAM holds the 4-bit overflow the old plan offloaded (~6.3 GiB), not the bf16 one (~18 GiB)
    assert not plan_quantization(llama, {"cuda:0": 4.0, "cpu": 20.0}).ok


@pytest.mark.parametrize("policy, bits", [("none", 16), ("8bit", 8), ("4bit", 4)])
def test_a_forced_policy_is_followed_and_said(llama, policy, bits):
    plan = plan_quantization(llama, {"cuda:0": 80.0, "cpu": 64.0}, policy)
    assert plan.bits == bits and plan.quantization == (policy if bits < 16 else "none")
    assert f"quantization = {policy} chosen" in plan.reason


def test_no_bitsandbytes_means_no_quantized_option(llama):
    plan = plan_quantization(llama, {"cuda:0": 16.0, "cpu": 64.0}, bnb_available=False)
    assert plan.bits == 16 and plan.offload_gib > 0 and [label for label, _ in plan.alternatives] == ["bf16"]
    assert "(bitsandbytes is not installed: no 4-bit or 8-bit)" in plan.reason


def test_cpu_uses_no_bitsandbytes_unless_forced(llama):
    small = ModelSize("SmolVLM-256M", 0.163, 0.094, 0.057, 22.5)
    plan = plan_quantization(small, {"cpu": 16.0})
    assert plan.device == "cpu" and plan.bits == 32 and plan.dtype == "float32" and plan.device_map is None
    assert "no bitsandbytes on the CPU" in plan.reason
    # 11B in float32 does not fit 48 GiB of RAM, bf16 does; no 8/4-bit on a CPU by itself.
    plan = plan_quantization(llama, {"cpu": 48.0})
    assert (plan.bits, plan.dtype, plan.ok) == (16, "bfloat16", True)
    refused = plan_quantization(llama, {"cpu": 16.0})
    forced = plan_quantization(llama, {"cpu": 16.0}, "4bit")
    assert forced.ok and forced.bits == 4 and "slower" in forced.warning
    # the advice names what 4-bit needs (the forced plan's figure), or that even 4-bit does not fit
    assert not refused.ok and f"force quantization = 4bit: ~{forced.estimate_gib:.1f} GiB, slow on a CPU" in refused.reason
    assert "Even 4-bit needs ~" in plan_quantization(llama, {"cpu": 8.0}).reason


def test_a_cpu_that_computes_bf16_keeps_16_bit_files_in_bf16(llama):
    """On avx512_bf16/amx_bf16 CPUs bf16 is the faster choice (bench: first token 2.1x, decode 1.3x); float32 files stay."""
    from vlmchat.models.plan import cpu_computes_bf16

    small = ModelSize("SmolVLM-256M", 0.163, 0.094, 0.057, 22.5, file_gib=0.478)
    plan = plan_quantization(small, {"cpu": 16.0}, cpu_bf16=True)
    assert (plan.dtype, plan.bits, plan.ok) == ("bfloat16", 16, True) and "native on this CPU" in plan.reason
    assert [label for label, _ in plan.alternatives] == ["bf16"]
    assert plan_quantization(small, {"cpu": 16.0}, cpu_bf16=True, dtype="float32").dtype == "float32"  # settings win
    assert plan_quantization(small, {"cpu": 16.0}).dtype == "float32"  # without bf16 instructions
    fp32_files = ModelSize("demo", 0.00062, 0.00032, file_gib=0.0037)
    kept = plan_quantization(fp32_files, {"cpu": 16.0}, cpu_bf16=True)
    assert kept.dtype == "float32" and "files are float32" in kept.reason and "slow" not in kept.reason
    assert plan_quantization(llama, {"cpu": 48.0}, cpu_bf16=True).dtype == "bfloat16"
    assert plan_quantization(llama, {"cuda:0": 80.0, "cpu": 64.0}, cpu_bf16=True, half_dtype="float16").dtype == "float16"
    epyc = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\nbugs\t\t: sysret_ss_attrs\n"
    assert cpu_computes_bf16(epyc) and cpu_computes_bf16("flags : avx2 amx_tile amx_bf16\n")
    assert not cpu_computes_bf16("flags\t\t: fpu sse2 avx2 avx512f\n") and not cpu_computes_bf16("Features : fp asimd bf16\n")


def test_gpu_present_but_on_cpu_requested(llama):
    plan = plan_quantization(llama, {"cuda:0": 80.0, "cpu": 64.0}, on_cpu=True)
    assert plan.device == "cpu"


def test_several_gpus_share_the_model(llama):
    plan = plan_quantization(llama, {"cuda:0": 12.0, "cuda:1": 12.0, "cpu": 64.0})
    assert plan.bits == 16 and plan.device_map == "auto" and plan.max_memory == {0: 12.0, 1: 12.0}


def test_plan_is_json_ready(llama):
    data = json.loads(json.dumps(plan_quantization(llama, {"cuda:0": 16.0, "cpu": 64.0}).to_dict()))
    assert data["quantization"] == "8bit" and data["alternatives"][0]["precision"] == "bf16"


def test_family_patterns_are_passed_through(llama):
    plan = plan_quantization(llama, {"cuda:0": 16.0, "cpu": 64.0}, unquantized=["model.vision_model", "lm_head"])
    assert plan.unquantized == ("model.vision_model", "lm_head")


def test_read_free_memory_reports_system_ram_without_a_gpu():
    memory = read_free_memory(gpus=False)
    assert set(memory) == {"cpu"} and 0 < memory["cpu"].free_gib <= memory["cpu"].total_gib


def test_sizes_from_safetensors_headers_match_the_loaded_demo_model(demo_settings, manager):
    size = size_from_folder(demo_settings.paths.resolve("models") / "vlmchat-demo")
    # The session's manager may carry adapters other tests attached: count the base model's own weights.
    counted = sum(p.numel() for n, p in manager.model.named_parameters() if "lora_" not in n)
    assert (size.language_b + size.vision_b) * 1e9 == pytest.approx(counted, rel=0.01)
    vision = sum(p.numel() for n, p in manager.model.named_parameters()
                 if ("vision_tower" in n or "multi_modal_projector" in n) and "lora_" not in n)
    assert size.vision_b * 1e9 == pytest.approx(vision, rel=0.01)
    assert model_size_for("demo", demo_settings).source == "safetensors headers"


def test_every_catalog_model_has_sizes_and_a_plan():
    settings = load_settings(ROOT / "settings.toml")
    ids = {entry.id for entry in settings.catalog}
    assert {"HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-500M-Instruct",
            "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct", LLAMA, "llava-hf/llava-1.5-7b-hf",
            "google/paligemma2-3b-mix-448", "google/gemma-3-4b-it", "facebook/chameleon-7b"} <= ids
    gated = {entry.id for entry in settings.catalog if entry.gated}
    assert {LLAMA, "google/paligemma2-3b-mix-448", "google/gemma-3-4b-it", "facebook/chameleon-7b"} <= gated
    for entry in settings.catalog:
        assert plan_quantization(size_from_catalog(entry), {"cuda:0": 80.0, "cpu": 64.0}).bits == 16


@pytest.mark.parametrize("text, expected", [
    ("[catalog.x]\nid = 'a/b'\nfamily = 'llava'\nlanguage_b = 1.0\n", "catalog.x is missing vision_b"),
    ("[catalog.x]\nid = 'ab'\nfamily = 'llava'\nlanguage_b = 1.0\nvision_b = 0.1\n", "catalog.x.id must be a hub id"),
    ("[catalog.x]\nid = 'a/b'\nfamily = 'llava'\nlanguage_b = 'big'\nvision_b = 0.1\n",
     "catalog.x.language_b must be a float"),
    ("[catalog.x]\nid = 'a/b'\nfamily = 'llava'\nlanguage_b = 1.0\nvision_b = 0.1\nsize = 3\n",
     "Unknown setting 'catalog.x.size'"),
    ("[catalog.x]\nid = 'a/b'\nfamily = 'llava'\nlanguage_b = 1.0\nvision_b = 0.1\ngated = 'yes'\n",
     "catalog.x.gated must be a bool"),
])
def test_catalog_errors_name_the_key(tmp_path, text, expected):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load_settings(path)
    assert expected in str(error.value)


def test_a_settings_file_extends_the_shipped_catalog(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[catalog.mine]\nid = 'me/my-vlm'\nfamily = 'llava'\nlanguage_b = 1.5\nvision_b = 0.3\n")
    settings = load_settings(path)
    assert catalog_entry(settings, "mine").id == "me/my-vlm" and catalog_entry(settings, LLAMA) is not None


def _plan_cli(*args):
    return subprocess.run([sys.executable, "launch.py", "plan", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "VLMCHAT_NO_BOOTSTRAP": "1"})


def test_plan_command_prints_the_plan_and_its_reason():
    result = _plan_cli("--model", LLAMA, "--vram-gib", "16")
    assert result.returncode == 0, result.stderr
    assert "8-bit on cuda:0" in result.stdout and "bf16 needs ~23.9 GiB with headroom" in result.stdout
    tiny = _plan_cli("--model", "chameleon-7b", "--vram-gib", "2")  # what blocks it is the GPU, not the RAM
    assert tiny.returncode == 1 and "does not hold even the context and activations" in tiny.stdout
    result = _plan_cli("--model", LLAMA, "--vram-gib", "80", "--json")
    data = json.loads(result.stdout)
    assert (data["bits"], data["dtype"], data["ok"]) == (16, "bfloat16", True)


def test_plan_command_mistakes_are_one_line():
    for given in ("-3", "100000"):  # too much was "must be a positive number" too
        result = _plan_cli("--model", LLAMA, "--vram-gib", given)
        assert result.returncode == 2 and "--vram-gib must be more than 0 and at most 4096 GiB" in result.stderr
        assert "Traceback" not in result.stderr


def test_cpu_estimate_counts_the_pictures_tokens_and_the_loading_peak():
    """Calibrated on SmolVLM-256M (benchmarks/realsize): low detail peaks while loading, high while answering."""
    smol = ModelSize("smolvlm-256m", 0.163, 0.0935, 0.0568, 22.5, file_gib=0.478)
    low, high = (estimate(smol, 32, "float32", picture_tokens=tokens, on_cpu=True) for tokens in (64, 1088))
    assert low.need_gib == pytest.approx(low.load_gib) and low.load_gib > low.weights_gib + low.runtime_gib
    assert high.need_gib == pytest.approx(high.weights_gib + high.runtime_gib) and high.need_gib > low.need_gib
    assert high.runtime_gib - low.runtime_gib == pytest.approx(1024 * 0.71 / 1024)  # vision activations per token
    half = estimate(smol, 16, "bfloat16", picture_tokens=1088, on_cpu=True)
    assert half.runtime_gib < high.runtime_gib and half.weights_gib == pytest.approx(high.weights_gib / 2)
    assert half.load_gib < half.need_gib  # bf16 from bf16 files: the weights stay mapped, no second copy
    unknown = estimate(ModelSize("x", 0.163, 0.0935), 32, "float32", on_cpu=True)
    assert unknown.load_gib > unknown.weights_gib  # no file size known: 16-bit files assumed
    # 4.5 GiB free, 2 kept for the system: float32 fits at low detail (~2.2), not at high (~2.7) -> bf16
    assert plan_quantization(smol, {"cpu": 4.5}, picture_tokens=64).dtype == "float32"
    assert plan_quantization(smol, {"cpu": 4.5}, picture_tokens=1088).dtype == "bfloat16"


def test_a_hub_model_with_float32_files_is_planned_as_its_folder_is(hub, demo_settings):
    """The hub's headers give the files' bytes (dtype x shape), so the plan before the download says float32 as
    the plan of the same files on disk does, and as Load does."""
    from hub_server import repo_from_folder
    from vlmchat.models.plan import plan_quantization
    from vlmchat.models.sizes import size_from_hub

    folder = demo_settings.paths.resolve("models") / "vlmchat-demo"
    hub.add("someone/float32-model", repo_from_folder(folder))
    online, local = size_from_hub("someone/float32-model"), size_from_folder(folder)
    assert online.file_gib == pytest.approx(local.file_gib, rel=0.01)
    for cpu_bf16 in (True, False):
        plans = [plan_quantization(size, {"cpu": 16.0}, cpu_bf16=cpu_bf16) for size in (online, local)]
        assert plans[0].dtype == plans[1].dtype == "float32" and plans[0].reason == plans[1].reason.replace(
            local.name, online.name)
