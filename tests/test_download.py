"""Downloads against a real HTTP hub on 127.0.0.1 (tests/hub_server.py): public, gated, 401, resume, offline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import DEMO_MODEL, ROOT
from hub_server import GRANTED, NOT_GRANTED, hub, repo_from_folder  # noqa: F401  (hub is a fixture)
from vlmchat.hub import (DownloadError, GatedModelError, OfflineError, cached_snapshot, download_model,
                              inspect_repo, select_files)

PUBLIC = "vlmchat-test/demo-tiny"
GATED = "vlmchat-test/gated-tiny"
# Files a real repo carries that vlmchat must not fetch: a duplicate .bin, an original/ folder, a README.
EXTRA = {"pytorch_model.bin": b"not needed" * 100, "original/consolidated.pth": b"not needed" * 100,
         "README.md": b"# card"}


@pytest.fixture
def repos(hub):
    public = hub.add(PUBLIC, repo_from_folder(DEMO_MODEL, extra=EXTRA))
    gated = hub.add(GATED, repo_from_folder(DEMO_MODEL, gated=True))
    return public, gated


def _cli(*args, env=None, stdin=None):
    full_env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1", **(env or {}))
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env=full_env, input=stdin, timeout=180)


def test_file_selection_prefers_safetensors_and_skips_other_formats():
    files = [("config.json", 1), ("model-00001-of-00002.safetensors", 5), ("model-00002-of-00002.safetensors", 5),
             ("model.safetensors.index.json", 1), ("pytorch_model-00001-of-00002.bin", 5),
             ("pytorch_model.bin.index.json", 1), ("consolidated.safetensors", 10), ("original/params.json", 1),
             ("tokenizer.json", 1), ("tokenizer.model", 1), ("chat_template.jinja", 1), ("README.md", 1),
             ("preprocessor_config.json", 1), (".gitattributes", 1)]
    keep, skip = select_files(files)
    assert sorted(path for path, _ in keep) == sorted([
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer.model", "chat_template.jinja",
        "preprocessor_config.json"])
    assert {"pytorch_model-00001-of-00002.bin", "consolidated.safetensors", "original/params.json"} <= set(skip)
    bin_only, _ = select_files([("config.json", 1), ("pytorch_model.bin", 5)])
    assert [path for path, _ in bin_only] == ["config.json", "pytorch_model.bin"]


def test_public_repo_downloads_only_needed_files_then_loads_and_answers(repos, demo_settings, picture_files):
    plan = inspect_repo(PUBLIC)
    names = {file.path for file in plan.files}
    assert names == {path.name for path in DEMO_MODEL.iterdir()}
    assert {"pytorch_model.bin", "original/consolidated.pth", "README.md"} <= set(plan.skipped)
    assert plan.total_bytes == sum(path.stat().st_size for path in DEMO_MODEL.iterdir())
    assert "model.safetensors" in plan.describe() and not plan.gated

    seen = []
    result = download_model(PUBLIC, progress=lambda fraction, text: seen.append(fraction))
    assert (result.path / "model.safetensors").read_bytes() == (DEMO_MODEL / "model.safetensors").read_bytes()
    assert not (result.path / "pytorch_model.bin").exists() and not (result.path / "original").exists()
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 2

    from vlmchat.models.manager import ModelManager

    manager = ModelManager(demo_settings)
    try:
        info = manager.load(PUBLIC)
        assert info.source == str(result.path) and info.model_id == PUBLIC
        image = Image.open(picture_files[("blue", "triangle")])
        answer = manager.generate([{"role": "user", "content": [
            {"type": "image", "image": image}, {"type": "text", "text": "Describe the image."}]}])
        assert answer == "a blue triangle"
    finally:
        manager.unload()


def test_gated_repo_without_token_is_401_with_the_model_page(repos, hub):
    with pytest.raises(GatedModelError) as error:
        download_model(GATED)
    message = str(error.value)
    assert "HTTP 401" in message and f"{hub.url}/{GATED}" in message and "HF_TOKEN" in message
    assert not hub.downloads("model.safetensors"), "nothing is downloaded before access is confirmed"


def test_gated_repo_with_a_token_that_has_no_access_is_403(repos, hub):
    with pytest.raises(GatedModelError) as error:
        download_model(GATED, token=NOT_GRANTED)
    message = str(error.value)
    assert "HTTP 403" in message and "Accept the licence" in message and f"{hub.url}/{GATED}" in message
    assert NOT_GRANTED not in message
    assert not hub.downloads("model.safetensors")


def test_gated_repo_with_the_right_token_downloads(repos, hub, caplog):
    caplog.set_level(logging.DEBUG)
    result = download_model(GATED, token=GRANTED)
    assert (result.path / "model.safetensors").exists()
    assert all(request.authorized for request in hub.downloads("model.safetensors"))
    assert GRANTED not in caplog.text and GRANTED not in result.message


def test_gated_repo_token_from_hf_token(repos, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    plan = inspect_repo(GATED)
    assert plan.gated and plan.token_source == "HF_TOKEN"
    assert GRANTED not in plan.describe()


def test_invalid_token_is_401_and_said_so(repos):
    with pytest.raises(DownloadError) as error:
        download_model(PUBLIC, token="hf_wrong_token_value")
    assert "rejected the Hugging Face token (HTTP 401" in str(error.value)
    assert "hf_wrong_token_value" not in str(error.value)


def test_missing_repo_and_revision(repos):
    with pytest.raises(DownloadError, match="There is no model 'vlmchat-test/nope'"):
        download_model("vlmchat-test/nope")
    with pytest.raises(DownloadError, match="has no revision 'v9'"):
        download_model(PUBLIC, revision="v9")


def test_connection_dropped_mid_file_resumes_with_a_range_request(repos, hub, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes in 10 MiB chunks; smaller chunks make this ~4 MB file behave like a big one.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256 * 1024)
    size = (DEMO_MODEL / "model.safetensors").stat().st_size
    hub.state.drop_after["model.safetensors"] = 1_000_000
    result = download_model(PUBLIC)
    requests = hub.downloads("model.safetensors")
    assert len(requests) == 2 and requests[0].range is None
    # The second request continues after the last whole chunk written (3 * 256 KiB), not from zero.
    assert requests[1].range == f"bytes={3 * 256 * 1024}-"
    assert size > 1_000_000
    assert (result.path / "model.safetensors").read_bytes() == (DEMO_MODEL / "model.safetensors").read_bytes()


def test_a_second_run_uses_the_cache(repos, hub):
    download_model(PUBLIC)
    again = download_model(PUBLIC)
    assert again.from_cache and len(hub.downloads("model.safetensors")) == 1


def test_offline_uses_the_cache_or_says_not_cached(repos, hub, monkeypatch):
    download_model(PUBLIC)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.state.requests)
    cached = download_model(PUBLIC)
    assert cached.from_cache and (cached.path / "config.json").exists()
    assert len(hub.state.requests) == before, "offline means no request at all"
    with pytest.raises(OfflineError, match="not cached and offline mode is on"):
        download_model(GATED)


def test_unreachable_hub_uses_the_cache_or_says_not_cached(repos, hub, monkeypatch):
    download_model(PUBLIC)
    from conftest import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert download_model(PUBLIC).from_cache
    assert cached_snapshot(PUBLIC) is not None
    with pytest.raises(OfflineError, match="cannot be reached"):
        download_model(GATED)


def test_cli_download_failures_are_one_line_with_exit_code_2(repos, hub):
    result = _cli("download", GATED)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "HTTP 401" in result.stderr and f"{hub.url}/{GATED}" in result.stderr
    result = _cli("download", GATED, env={"HF_TOKEN": NOT_GRANTED})
    assert result.returncode == 2 and "HTTP 403" in result.stderr and NOT_GRANTED not in result.stderr
    result = _cli("download", GATED, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "not cached and offline" in result.stderr


def test_cli_download_with_token_prints_the_plan_and_never_the_token(repos, hub):
    result = _cli("download", GATED, env={"HF_TOKEN": GRANTED})
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "HF_TOKEN" in result.stdout
    assert GRANTED not in result.stdout + result.stderr


def test_cli_remember_stores_the_token_with_huggingface_hub_login(repos, hub, tmp_path):
    result = _cli("download", GATED, "--ask-token", "--remember", stdin=GRANTED + "\n")
    assert result.returncode == 0, result.stderr
    assert GRANTED not in result.stdout + result.stderr
    token_file = tmp_path / "hf-home" / "token"
    assert token_file.read_text().strip() == GRANTED
    # Without --remember nothing is written.
    token_file.unlink()
    result = _cli("download", PUBLIC, "--ask-token", stdin=GRANTED + "\n")
    assert result.returncode == 0 and not token_file.exists()


def test_model_tab_shows_files_and_plan_then_loads(repos, hub, demo_settings):
    from vlmchat.models.manager import ModelManager
    from vlmchat.ui.app import status_line
    from vlmchat.ui.model_tab import WARN, load_model, model_choices, preview

    assert any("gated" in label for label, _ in model_choices(demo_settings))
    files, plan = preview(GATED, "", "auto", demo_settings)
    assert files.startswith(WARN) and "HTTP 401" in files
    files, plan = preview(GATED, GRANTED, "auto", demo_settings)
    assert "`model.safetensors`" in files and "download" in files and "Plan:" in plan and "float32" in plan
    assert GRANTED not in files + plan
    manager = ModelManager(demo_settings)
    try:
        message = load_model(manager, PUBLIC, "", False, "auto")
        assert message.startswith("Loaded: vlmchat-test/demo-tiny") and PUBLIC in status_line(manager)
        files, _ = preview(PUBLIC, "", "auto", demo_settings)
        assert "(0 B to download)" in files
    finally:
        manager.unload()


def test_an_adapter_imports_from_the_hub_through_the_download_code(hub, tmp_path):
    from vlmchat.lora import store as registry

    hub.add("someone/demo-es-copy", repo_from_folder(ROOT / "adapters" / "demo-es"))
    info = registry.import_from_hub("someone/demo-es-copy", tmp_path / "adapters")
    assert info.name == "demo-es-copy" and info.problem == "" and info.base_model == "demo"
    assert sorted(p.name for p in info.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                           "vlmchat.json"]
    with pytest.raises(Exception, match="already exists"):
        registry.import_from_hub("someone/demo-es-copy", tmp_path / "adapters")


def test_an_adapter_repo_that_carries_its_bases_config_json_imports_and_a_model_repo_with_it_is_still_refused(
        hub, tmp_path):
    """Some trainers save the base's config.json beside the adapter: its import from the hub was refused as "has no
    preprocessor_config.json ... processor cannot be loaded" (the model check read config.json and found no
    processor files). A model repo with the same config.json and no processor files is still refused, before its
    weights are fetched."""
    from hub_server import FakeRepo
    from vlmchat.errors import ModelLoadError
    from vlmchat.lora import store as registry

    base_config = {"config.json": (DEMO_MODEL / "config.json").read_bytes()}  # a LLaVA config, as the base's
    hub.add("someone/demo-es-with-config", repo_from_folder(ROOT / "adapters" / "demo-es", extra=base_config))
    info = registry.import_from_hub("someone/demo-es-with-config", tmp_path / "adapters")
    assert info.name == "demo-es-with-config" and info.problem == "" and info.base_model == "demo"
    assert hub.downloads("adapter_model.safetensors")
    assert sorted(p.name for p in info.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                           "vlmchat.json"]

    hub.add("someone/llava-noproc", FakeRepo({**base_config,
                                              "model.safetensors": (DEMO_MODEL / "model.safetensors").read_bytes()}))
    with pytest.raises(ModelLoadError, match="'someone/llava-noproc' has no preprocessor_config.json or "
                                             "processor_config.json and no tokenizer files"):
        download_model("someone/llava-noproc")
    assert not [request for request in hub.downloads("model.safetensors") if "/someone/llava-noproc/" in request.path]


def test_the_plans_config_json_is_not_a_cached_model_and_a_second_plan_works_like_the_first(repos, hub, demo_settings,
                                                                                               monkeypatch):
    """The plan of a hub model reads config.json through the cache; that alone is not a model to load from."""
    from vlmchat.models.decide import decide_load
    from vlmchat.models.resolve import resolve_model
    from vlmchat.ui.model_tab import WARN, preview

    first = decide_load(resolve_model(PUBLIC, demo_settings), demo_settings)
    assert first.size.source == "safetensors headers on the hub"
    assert cached_snapshot(PUBLIC) is None
    source = resolve_model(PUBLIC, demo_settings)
    assert source.kind == "hub" and source.path is None
    assert decide_load(source, demo_settings).key() == first.key()
    assert decide_load(source, demo_settings, "none").ok
    files, plan = preview(PUBLIC, "", "auto", demo_settings)
    from vlmchat.hub import human_size

    weights = human_size((ROOT / "models" / "vlmchat-demo" / "model.safetensors").stat().st_size)
    assert f"| `model.safetensors` | {weights} | download |" in files and plan.startswith("**Plan:**"), plan
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not cached and offline mode is on"):
        download_model(PUBLIC)
    with pytest.raises(OfflineError, match="not cached and offline mode is on"):
        decide_load(resolve_model(PUBLIC, demo_settings), demo_settings)
    files, plan = preview(PUBLIC, "", "auto", demo_settings)
    assert files.startswith(WARN + f"{PUBLIC} is not cached") and "not cached and offline" in plan


def test_cli_plan_twice_then_offline_says_not_cached(repos, hub):
    for args in ((), (), ("--quantization", "none")):
        result = _cli("plan", "--model", PUBLIC, *args)
        assert result.returncode == 0 and "safetensors headers on the hub" in result.stdout, result.stderr
    for command in (("download", PUBLIC), ("plan", "--model", PUBLIC)):
        result = _cli(*command, env={"HF_HUB_OFFLINE": "1"})
        assert result.returncode == 2 and "is not cached and offline mode is on" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "using the cached copy" not in result.stdout


def test_a_cached_model_needs_config_tokenizer_and_every_weights_file(tmp_path):
    from vlmchat.hub import holds_a_model

    (tmp_path / "config.json").write_text("{}")
    assert not holds_a_model(tmp_path)  # config.json alone: what the plan leaves in the cache
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert not holds_a_model(tmp_path)  # a shard missing
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert holds_a_model(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    assert not holds_a_model(tmp_path)


def test_cli_download_without_a_connection_uses_the_cached_copy(repos, hub):
    from conftest import free_port

    download_model(PUBLIC)
    closed = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = _cli("download", PUBLIC, env=closed)
    assert result.returncode == 0, result.stderr
    assert "the hub cannot be reached, using the cached copy in" in result.stdout and not result.stderr.strip()
    result = _cli("download", GATED, env=closed)
    assert result.returncode == 2 and "is not cached and the hub" in result.stderr and "cannot be reached" in result.stderr
    # what to do, said so that `download` itself, `plan`, `--model` and the Model tab can all follow it
    assert "check the proxy, or HF_ENDPOINT) and try again" in result.stderr and "launch.py download" not in result.stderr


def test_model_tab_without_a_connection_says_a_cached_model_loads_from_the_cache(repos, hub, demo_settings,
                                                                                  monkeypatch):
    from conftest import free_port
    from vlmchat.ui.model_tab import WARN, preview

    download_model(PUBLIC)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    files, plan = preview(PUBLIC, "", "auto", demo_settings)
    assert files.startswith("The hub cannot be reached: `vlmchat-test/demo-tiny` will load from the cache")
    assert plan.startswith("**Plan:**") and "float32" in plan
    files, plan = preview(GATED, "", "auto", demo_settings)
    assert files.startswith(WARN) and "not cached and the hub" in files
    assert plan == ""  # said once, under Files: the Plan said it again word for word (blind tester)


def test_ctrl_c_stops_a_download_at_once_and_says_the_next_run_downloads_the_rest(hub, tmp_path):
    import signal
    import time

    from hub_server import FakeRepo

    files = {path.name: path.read_bytes() for path in DEMO_MODEL.iterdir() if path.suffix != ".safetensors"}
    files["model.safetensors"] = os.urandom(30_000_000)
    hub.add("slow/big", FakeRepo(files))
    hub.state.rate = 2_000_000  # 15 s for the weights
    # Ctrl-C as in a terminal: a test run started in the background (`cmd &` without job control) ignores SIGINT,
    # and its children inherit that, so the download ran on to the end and the test failed (not vlmchat's doing).
    process = subprocess.Popen([sys.executable, "launch.py", "download", "slow/big"], cwd=ROOT, text=True,
                               env=dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while hub.state.sent.get("model.safetensors", 0) < 3_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    pressed = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    took = time.monotonic() - pressed
    assert process.returncode == 130 and took < 1.5, (took, err)
    last = err.strip().splitlines()[-1]
    assert last == ("vlmchat: stopped downloading slow/big; the files finished so far are kept, and running the "
                    "same command again downloads the rest.") and "Traceback" not in err
    assert hub.state.sent["model.safetensors"] < 10_000_000, "the download stopped, not ran on"
    blobs = tmp_path / "hf-home" / "hub" / "models--slow--big" / "blobs"
    assert not list(blobs.glob("*.incomplete")), "no partial file is left behind"
    hub.state.rate = None
    result = _cli("download", "slow/big")
    assert result.returncode == 0, result.stderr
    assert len(hub.downloads("config.json")) == 1 and len(hub.downloads("model.safetensors")) == 2


@pytest.mark.parametrize("repo, files, expected", [
    ("nobody/nothing", None, "There is no model 'nobody/nothing' at"),
    ("someone/bin-only", {"config.json": b"{}", "pytorch_model.bin": b"x"}, "has only PyTorch .bin weights"),
    ("someone/no-weights", {"config.json": b"{}", "README.md": b"# card"},
     "has no safetensors or PyTorch weights at its top level"),
])
def test_plan_of_a_missing_repo_or_one_without_safetensors_says_so(hub, demo_settings, repo, files, expected):
    from hub_server import FakeRepo
    from vlmchat.ui.model_tab import WARN, preview

    if files is not None:
        hub.add(repo, FakeRepo(files))
    files_said, plan = preview(repo, "", "auto", demo_settings)
    said = plan or files_said  # under Plan, or once under Files where both failed alike
    assert said.startswith(WARN + repo if files else WARN + "There is no model") and expected in said, said
    assert "Error" not in said and (files_said + plan).count(expected) == 1


@pytest.mark.slow
def test_a_page_opened_after_a_load_shows_the_loaded_model_in_the_model_tab(repos, hub, tmp_path):
    """The dropdown's value was the model loaded when the app was built: a later page showed the demo, and its
    Load button would have brought the demo back."""
    import time

    from gradio_client import Client

    from conftest import LaunchedApp
    from test_browser import CHROMIUM, _open_tab, pytestmark as needs_chromium

    if needs_chromium.args[0]:
        pytest.skip(needs_chromium.kwargs["reason"])
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    app = LaunchedApp(tmp_path / "app").wait_ready()
    try:
        message = Client(app.url, verbose=False).predict(PUBLIC, api_name="/load_model")
        assert message.startswith(f"Loaded: {PUBLIC}")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                asked = len(hub.state.requests)
                page.goto(app.url)
                page.locator("#vlmchat-status").get_by_text(PUBLIC).wait_for()
                _open_tab(page, "Model")
                box = page.get_by_label("Model: pick one, or type a hub id (owner/name) or a local folder")
                deadline = time.monotonic() + 20  # the page asks for the loaded model as it opens
                while box.input_value() != PUBLIC and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert box.input_value() == PUBLIC
                time.sleep(1)
                assert len(hub.state.requests) == asked, "opening a page previews nothing (no hub request)"
            finally:
                browser.close()
    finally:
        app.stop()


def _text_llm_repo(folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    return repo_from_folder(folder, extra={"tokenizer.json": (DEMO_MODEL / "tokenizer.json").read_bytes()})


def test_a_model_vlmchat_cannot_load_is_refused_by_plan_preview_and_download_before_the_weights(hub, demo_settings,
                                                                                                 tmp_path):
    """A text-only LLM and a repo without processor files were planned and downloaded whole, then refused at Load."""
    from hub_server import FakeRepo
    from vlmchat.errors import ModelLoadError
    from vlmchat.models.decide import decide_load
    from vlmchat.models.resolve import resolve_model
    from vlmchat.ui.model_tab import WARN, preview

    hub.add("someone/text-llm", _text_llm_repo(tmp_path / "llm"))
    hub.add("someone/noproc", FakeRepo({name: (DEMO_MODEL / name).read_bytes()
                                        for name in ("config.json", "generation_config.json", "model.safetensors")}))
    for repo, said in (("someone/text-llm", "'someone/text-llm' is a LlamaForCausalLM model, which does not read "
                                            "pictures"),
                       ("someone/noproc", "'someone/noproc' has no preprocessor_config.json or processor_config.json "
                                          "and no tokenizer files")):
        with pytest.raises(ModelLoadError, match=said):
            download_model(repo)
        assert not [request for request in hub.downloads("model.safetensors") if f"/{repo}/" in request.path]
        with pytest.raises(ModelLoadError, match=said):
            decide_load(resolve_model(repo, demo_settings), demo_settings)  # what `launch.py plan` shows
        _, plan = preview(repo, "", "auto", demo_settings)
        assert plan.startswith(WARN) and said in plan, plan


def test_a_download_that_clearly_does_not_fit_is_refused_with_both_numbers(repos, hub, monkeypatch, recwarn):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2_000_000, 2_000_000))
    with pytest.raises(DownloadError, match=r"vlmchat-test/demo-tiny needs 4.8 MB more on disk, and .*hub has 2.0 MB "
                                            r"free: free some space there, or choose .* HF_HUB_CACHE"):
        download_model(PUBLIC)
    assert not hub.downloads("model.safetensors") and not [w for w in recwarn if "disk space" in str(w.message)]


@pytest.mark.parametrize("number, said", [
    (30, "cannot be written: choose another one with HF_HUB_CACHE (or HF_HOME)"),
    (13, "cannot be written: choose another one with HF_HUB_CACHE (or HF_HOME)"),
    (20, "cannot be written: choose another one with HF_HUB_CACHE (or HF_HOME)"),
    (28, "Free some disk space in"),
])
def test_a_cache_that_cannot_be_written_is_not_called_a_full_disk(number, said):
    from vlmchat.hub import friendly_hub_error

    message = str(friendly_hub_error(OSError(number, os.strerror(number), "/x/hub"), PUBLIC))
    assert said in message and message.startswith(f"Downloading {PUBLIC} failed: [Errno {number}]")
    assert ("disk space" in message) is (number == 28)


def test_cli_download_into_a_cache_under_a_file_says_so_last(repos, hub, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = _cli("download", PUBLIC, env={"HF_HUB_CACHE": str(tmp_path / "afile" / "hub")})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "[Errno 20] Not a directory" in last and "cannot be written" in last and "HF_HUB_CACHE" in last, last
    assert "disk space" not in result.stderr and "Ignored error" not in result.stderr and "Traceback" not in result.stderr


def test_a_model_page_address_is_taken_for_its_hub_id_and_a_typo_gets_the_nearest_name(repos, hub, demo_settings):
    from vlmchat.errors import ModelLoadError
    from vlmchat.hub import check_hub_id
    from vlmchat.models.resolve import hub_id, resolve_model

    for address in (f"https://huggingface.co/{PUBLIC}", f"https://huggingface.co/{PUBLIC}/tree/main",
                    f"https://huggingface.co/{PUBLIC}/blob/main/config.json", f"{hub.url}/{PUBLIC}/"):
        assert check_hub_id(address) == PUBLIC and resolve_model(address, demo_settings).model_id == PUBLIC
    assert download_model(f"{hub.url}/{PUBLIC}/tree/main").repo_id == PUBLIC
    with pytest.raises(DownloadError, match="is not a hub id"):
        check_hub_id(f"https://example.com/{PUBLIC}")
    with pytest.raises(ModelLoadError, match=r"'smolvlm256m' is not a hub id like 'owner/name'; did you mean "
                                             r"HuggingFaceTB/SmolVLM-256M-Instruct\?$"):
        hub_id("smolvlm256m", demo_settings)
    assert hub_id("smolvlm-256m", demo_settings) == "HuggingFaceTB/SmolVLM-256M-Instruct"
