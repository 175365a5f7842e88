"""The model manager on real transformers models: the demo model and a tiny random LLaVA."""

import dataclasses
import gc
import shutil
import threading
import time
import weakref

import pytest
from PIL import Image

from vlmchat.errors import InputError, ModelLoadError, NoModelError
from vlmchat.models.manager import GenerationParams, ModelManager
from vlmchat.models.resolve import resolve_model as resolve_model_source


def _ask(path, question):
    image = Image.open(path)
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


def test_load_reports_device_dtype_and_why(manager):
    info = manager.info
    assert (info.model_id, info.device, info.dtype) == ("demo", "cpu", "float32")
    assert "no CUDA" in info.reason and "float32 on CPU" in info.reason
    assert "demo" in info.summary() and "LlavaForConditionalGeneration" in info.summary()


def test_stream_grows_to_the_right_answer(manager, picture_files):
    chunks = list(manager.stream(_ask(picture_files[("red", "circle")], "Describe the image.")))
    assert chunks and all(later.startswith(earlier) for earlier, later in zip(chunks, chunks[1:]))
    assert chunks[-1].strip() == "a red circle"


def test_concurrent_requests_are_serialised_and_all_correct(manager, picture_files):
    cases = list(picture_files.items())[:6]
    results = {}

    def ask(key, path):
        results[key] = manager.generate(_ask(path, "Describe the image."))

    threads = [threading.Thread(target=ask, args=case) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {key: f"a {key[0]} {key[1]}" for key, _ in cases}


def test_stop_ends_generation_and_frees_the_lock(random_llava, demo_settings, picture_files):
    manager = ModelManager(demo_settings)
    manager.load(str(random_llava))
    stop = threading.Event()
    started = time.monotonic()
    stream = manager.stream(_ask(picture_files[("red", "circle")], "Describe the image."),
                            GenerationParams(max_new_tokens=4000), stop)
    for count, _ in enumerate(stream):
        if count == 3:
            stop.set()
    assert time.monotonic() - started < 30  # 4000 tokens would take minutes
    assert manager.lock.acquire(timeout=5)
    manager.lock.release()


def test_closing_the_stream_early_stops_generation(random_llava, demo_settings, picture_files):
    manager = ModelManager(demo_settings)
    manager.load(str(random_llava))
    stream = manager.stream(_ask(picture_files[("red", "circle")], "Hi"), GenerationParams(max_new_tokens=4000))
    next(stream)
    stream.close()  # what Gradio does on Stop or a closed tab
    assert manager.lock.acquire(timeout=30)
    manager.lock.release()


def test_unload_frees_the_model(random_llava, demo_settings):
    manager = ModelManager(demo_settings)
    manager.load(str(random_llava))
    model = weakref.ref(manager.model)
    manager.unload()
    gc.collect()
    assert model() is None and manager.info is None
    with pytest.raises(NoModelError, match="No model is loaded"):
        next(manager.stream([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]))


def test_a_load_that_waits_for_an_answer_says_so(demo_settings):
    """Load during a long answer returned only when the answer ended, saying nothing meanwhile (tester)."""
    manager = ModelManager(demo_settings)
    said = []
    with manager.lock:  # as an answer being written holds it
        loading = threading.Thread(target=manager.load, args=("demo",),
                                   kwargs={"progress": lambda fraction, text: said.append(text)})
        loading.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said and said[0].startswith("Waiting for the answer being written to finish") and manager.info is None
    loading.join(60)
    assert manager.info is not None and said[-1].startswith("Loading demo")


def test_missing_demo_model_says_how_to_rebuild(demo_settings, tmp_path):
    settings = dataclasses.replace(demo_settings, paths=dataclasses.replace(demo_settings.paths, models=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="build-demo"):
        resolve_model_source("demo", settings)


@pytest.mark.parametrize("model_id, message", [
    ("not-a-hub-id", "neither an existing folder nor a hub id.*the Model tab's names work too \\(smolvlm-256m, "),
    ("a/b/c", "neither an existing folder nor a hub id"),
    # a model's own name without its owner (newcomer reviewer: no hint)
    ("SmolVLM-256M-Instruct", "did you mean HuggingFaceTB/SmolVLM-256M-Instruct\\?$"),
])
def test_bad_model_ids_are_explained(demo_settings, model_id, message):
    with pytest.raises(ModelLoadError, match=message):
        resolve_model_source(model_id, demo_settings)


def test_demo_is_read_in_any_case_as_catalog_names_are(demo_settings):
    assert resolve_model_source("Demo", demo_settings).kind == "demo"


def test_folder_without_config_is_explained(demo_settings, tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        resolve_model_source(str(tmp_path), demo_settings)


@pytest.mark.parametrize("kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}])
def test_generation_params_are_validated(kwargs):
    with pytest.raises(InputError):
        GenerationParams(**kwargs)


def test_plan_shown_before_load_is_the_plan_load_used(manager, demo_settings):
    from vlmchat.models.decide import decide_load
    from vlmchat.models.resolve import resolve_model
    from vlmchat.ui.model_tab import describe_plan

    shown = decide_load(resolve_model("demo", demo_settings), demo_settings)
    assert shown.key() == manager.decision.key()
    assert shown.size.source == manager.decision.size.source == "safetensors headers"
    assert manager.decision.plan.summary().split(" — ")[0] in describe_plan("demo", "auto", demo_settings)  # free RAM moves
    assert manager.info.reason == manager.decision.reason and "CPU" in manager.info.reason


def test_a_model_that_fails_to_load_leaves_the_working_one_loaded(demo_settings, demo_model_path, tmp_path,
                                                                   picture_files):
    """A failed load had freed the working model first: Chat said "No model is loaded" under a header that still
    named it. Now the previous model is loaded again and the message says so; a damaged weights file is named."""
    manager = ModelManager(demo_settings)
    manager.load()
    cut = tmp_path / "cut"
    shutil.copytree(demo_model_path, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # the header whole, the last tensor cut short
    with pytest.raises(ModelLoadError, match="damaged weights file.*demo is loaded again"):
        manager.load(str(cut))
    assert manager.info.model_id == "demo"
    # a config.json cut short, or not an object, or of a model type transformers does not know: said in one line,
    # and the working model stays (a cut config freed it for nothing: Chat said "No model is loaded"; blind tester)
    config = cut / "config.json"
    weights.write_bytes((demo_model_path / "model.safetensors").read_bytes())
    text = (demo_model_path / "config.json").read_text()
    for written, said in ((text[:200], r"config.json is not valid JSON \(Expecting"),
                          ("[]", "config.json holds a JSON list, not the settings object save_pretrained writes"),
                          (text.replace('"model_type": "llava"', '"model_type": "nosuchmodel"'),
                           "is of model_type 'nosuchmodel', which transformers .* does not know")):
        config.write_text(written)
        with pytest.raises(ModelLoadError, match=said):
            manager.load(str(cut))
        assert manager.info.model_id == "demo"
    config.write_text(text)
    (cut / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no .safetensors weight files; copy the model's"):
        manager.load(str(cut))
    answer = manager.generate(_ask(picture_files[("red", "circle")], "Describe the image."), GenerationParams())
    assert answer.strip() == "a red circle"
    manager.unload()


def test_a_text_only_model_is_named_as_one(demo_settings, tmp_path):
    """A text-only LLM was reported as a missing preprocessor_config.json ("Check the id or path")."""
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llm")
    with pytest.raises(ModelLoadError, match=r"LlamaForCausalLM model, which does not read pictures"):
        ModelManager(demo_settings).load(str(tmp_path / "llm"))


def test_a_model_load_cannot_use_is_refused_before_the_working_one_is_freed(manager, demo_model_path, tmp_path):
    """A text-only model, and a folder saved without its processor, were refused only after the working model had
    been freed (then loaded again); the missing processor was transformers' "Can't load image processor ... Check
    the id or path". Both are told from the files now, with the working model never freed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmchat.ui.model_tab import WARN, preview

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llm")
    noproc = tmp_path / "noproc"  # what model.save_pretrained writes without processor.save_pretrained
    noproc.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(demo_model_path / name, noproc / name)
    working = manager.model
    for folder, said in ((tmp_path / "llm", "LlamaForCausalLM model, which does not read pictures"),
                         (noproc, "has no preprocessor_config.json or processor_config.json and no tokenizer files "
                                  r"\(.*\), so its processor cannot be loaded: save them .*processor.save_pretrained")):
        with pytest.raises(ModelLoadError, match=said) as error:
            manager.load(str(folder))
        assert "loaded again" not in str(error.value) and manager.model is working
        files, _ = preview(str(folder), "", "auto", manager.settings)
        assert files.startswith(WARN) and __import__("re").search(said, files), files
    (noproc / "tokenizer.json").write_bytes((demo_model_path / "tokenizer.json").read_bytes())
    with pytest.raises(ModelLoadError, match=r"has no preprocessor_config.json or processor_config.json, so"):
        manager.load(str(noproc))
    assert manager.model is working
