"""OpenAI-compatible endpoints used as models, against a second vlmchat serving /v1 on loopback.

The peer is a real `python launch.py` (the shipped demo model; demo-es answers in Spanish), so the
`openai` client, the protocol, streaming, usage and the peer's batcher are all real. Only an
unreachable port stands in for a server that is down.
"""

from __future__ import annotations

import contextlib
import csv
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, LaunchedApp, free_port, write_settings

pytest.importorskip("openai")

PRICE_IN, PRICE_OUT = 0.5, 2.0  # USD per million tokens, to check the cost arithmetic


@pytest.fixture(scope="module")
def peer(app):
    """The session's launched app (conftest.py): a plain `python launch.py` on the demo model, as the peer needs."""
    return app


@pytest.fixture(scope="module")
def settings_file(tmp_path_factory, peer):
    """Settings with three endpoints: the peer in English and in Spanish (priced), and a server that is down."""
    path = write_settings(tmp_path_factory.mktemp("client"))
    url = peer.url + "v1"
    path.write_text(path.read_text() + f"""
[endpoints.peer-en]
base_url = "{url}"
model = "demo"

[endpoints.peer-es]
base_url = "{url}"
model = "demo-es"
price_in = {PRICE_IN}
price_out = {PRICE_OUT}
max_concurrency = 4

[endpoints.down]
base_url = "http://127.0.0.1:{free_port()}/v1"
model = "demo"
timeout_s = 5.0

[endpoints.keyed]
base_url = "{url}"
model = "demo"
api_key_env = "VLMCHAT_TEST_NO_SUCH_KEY"
""", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def remote(settings_file):
    """A manager with no local model: everything it answers comes from the endpoints."""
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    return ModelManager(load_settings(settings_file))


def conversation(path) -> list[dict]:
    from vlmchat.images import load_image

    return [{"role": "user", "content": [{"type": "image", "image": load_image(path)},
                                         {"type": "text", "text": "Describe the image."}]}]


def launch(settings_file, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VLMCHAT_NO_BOOTSTRAP="1")
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "--settings", str(settings_file), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_endpoints_are_choices_beside_local_models(remote):
    assert remote.model_choices() == ["endpoint:peer-en", "endpoint:peer-es", "endpoint:down", "endpoint:keyed"]


@pytest.mark.slow
def test_chat_streams_from_the_endpoint_with_tokens_latency_and_cost(remote, picture_files):
    answers = list(remote.stream_answer(conversation(picture_files[("red", "circle")]), adapter="endpoint:peer-es"))
    assert [a.done for a in answers] == [False] * (len(answers) - 1) + [True] and len(answers) >= 3
    final = answers[-1]
    assert final.text.strip() == "un círculo rojo" and final.model == "endpoint:peer-es"
    assert final.prompt_tokens > 10 and final.completion_tokens >= 3 and final.finish_reason == "stop"
    assert final.cost_usd == pytest.approx((final.prompt_tokens * PRICE_IN + final.completion_tokens * PRICE_OUT) / 1e6)
    assert 0 < final.first_token_s <= final.latency_s and final.tokens_per_s > 0
    assert "".join(remote.stream(conversation(picture_files[("red", "circle")]), adapter="endpoint:peer-en")) \
        .startswith("a")


@pytest.mark.slow
def test_a_chat_answer_from_an_endpoint_shows_its_latency_and_cost_and_names_its_model(remote, picture_files):
    """Chat showed "4 tokens · 45.5 tokens/s" for a priced endpoint's answer, and the saved turn said "model":
    "demo", the local base (API reviewer)."""
    from vlmchat.chats import new_chat, stats_line
    from vlmchat.ui.chat_tab import ChatTurns, user_turn

    chat = new_chat()
    chat["messages"].append(user_turn({"text": "Describe the image.", "files": [str(picture_files[("red", "circle")])]}))
    *_, turn = ChatTurns(remote, remote.settings).answer(chat, "endpoint:peer-es")
    assert turn["status"] == "ok" and turn["model"] == "demo-es" and turn["cost_usd"] > 0
    line = stats_line(turn)
    assert " s · $0.0" in line and line.endswith("adapter: endpoint:peer-es")


@pytest.mark.slow
def test_generate_batch_through_the_endpoint_keeps_the_order(remote, picture_files):
    keys = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    keys = [key for key in keys if key in picture_files] or list(picture_files)[:3]
    answers = remote.answer_batch([conversation(picture_files[key]) for key in keys], adapter="endpoint:peer-en")
    assert [a.text for a in answers] == [f"a {colour} {shape}" for colour, shape in keys]
    assert all(a.cost_usd is None for a in answers)  # peer-en has no price


@pytest.mark.slow
def test_compare_puts_a_local_model_beside_an_endpoint(settings_file, picture_files):
    from vlmchat.evaluate.compare import compare_stream, figures
    from vlmchat.images import load_image
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    local = ModelManager(load_settings(settings_file))
    local.load()
    assert local.model_choices() == ["base", "demo-es", "endpoint:peer-en", "endpoint:peer-es", "endpoint:down",
                                     "endpoint:keyed"]
    *_, final = compare_stream(local, load_image(picture_files[("red", "circle")]), "Describe the image.", "base",
                               "endpoint:peer-es")
    assert (final[0].text.strip(), final[1].text.strip()) == ("a red circle", "un círculo rojo")
    assert final[1].cost_usd is not None and final[0].cost_usd is None  # the priced endpoint, the local side
    assert "$" in figures(final[1]) and "price" not in figures(final[0]) and "tokens" in figures(final[1])
    # a side whose endpoint is down says so, and the other side's answer stays (both showed an error, the local
    # side's finished answer was lost: API reviewer)
    *_, final = compare_stream(local, load_image(picture_files[("red", "circle")]), "Describe the image.", "base",
                               "endpoint:down")
    assert final[0].text.strip() == "a red circle" and final[0].finish_reason == "stop"
    assert final[1].finish_reason == "error" and "cannot be reached" in final[1].text
    # a side whose endpoint answers "" says so as Chat does (it was an empty cell: blind tester)
    empty = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]}).encode()
    with _served_endpoint(_answering(200, empty), "empty", "m", "unused") as endpoint:
        local.add_endpoint(endpoint.entry, api_key="unused")
        *_, final = compare_stream(local, load_image(picture_files[("red", "circle")]), "Describe the image.",
                                   "base", "endpoint:empty")
    assert final[0].text.strip() == "a red circle"
    assert final[1].finish_reason == "error" and "returned an empty answer; rephrase" in final[1].text


@pytest.mark.slow
def test_user_mistakes_are_one_clear_message(remote, picture_files, monkeypatch):
    from vlmchat.errors import InputError

    with pytest.raises(InputError, match=r"no endpoint named 'nope'.*peer-en, peer-es"):
        remote.answer(conversation(picture_files[("red", "circle")]), adapter="endpoint:nope")
    with pytest.raises(InputError, match=r"'down' .* cannot be reached; check that the server runs"):
        remote.answer(conversation(picture_files[("red", "circle")]), adapter="endpoint:down")
    monkeypatch.delenv("VLMCHAT_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(InputError, match=r"environment variable VLMCHAT_TEST_NO_SUCH_KEY"):
        remote.answer(conversation(picture_files[("red", "circle")]), adapter="endpoint:keyed")
    # A key pasted with a line break inside could not go into a header: it read "cannot be reached".
    monkeypatch.setenv("VLMCHAT_TEST_NO_SUCH_KEY", "sk-abc\ndef")
    with pytest.raises(InputError, match=r"'keyed''s API key \(in VLMCHAT_TEST_NO_SUCH_KEY\) holds a line break"):
        remote.answer(conversation(picture_files[("red", "circle")]), adapter="endpoint:keyed")


def test_a_batch_stops_at_an_endpoint_that_refuses_every_request(remote, picture_files, tmp_path):
    """A server that is down: captions stop after the first batch with one reason (they sent, and failed,
    one request per picture), and an eval stops with the message instead of skipping every row alike."""
    from vlmchat.caption.run import CaptionOptions, caption_images
    from vlmchat.errors import EndpointUnusable
    from vlmchat.evaluate.run import EvalOptions, run_eval
    from vlmchat.evaluate.sets import read_eval_set

    folder = tmp_path / "pictures"
    folder.mkdir()
    images = []
    for copy in range(3):
        for (colour, shape), path in picture_files.items():
            images.append(folder / f"{copy}-{colour}-{shape}.png")
            shutil.copy(path, images[-1])
    summary = caption_images(remote, images, CaptionOptions(adapter="endpoint:down", batch_size=4))
    assert "cannot be reached" in summary.stopped and len(summary.failed) == 4 and not summary.captioned
    assert f"stopped with {len(images) - 4} not done: Endpoint 'down'" in summary.line()
    assert "images/s" not in summary.line()  # it said "(82.3 images/s …)" for a run where nothing worked
    _question_set(picture_files, tmp_path / "colours.jsonl")
    questions = read_eval_set(tmp_path / "colours.jsonl")
    with pytest.raises(EndpointUnusable, match="'down' .* cannot be reached"):
        run_eval(remote, questions, ["endpoint:down"], "generate", EvalOptions(batch_size=2), folder=tmp_path / "e1")
    # beside a model that answers, the run goes on and is written: the base's scores were lost with the endpoint's
    from vlmchat.models.manager import ModelManager

    local = ModelManager(remote.settings)
    local.load()
    result = run_eval(local, questions, ["base", "endpoint:down"], "generate", EvalOptions(batch_size=2),
                      folder=tmp_path / "e2")
    assert len(result.scores["base"]) == len(questions.items) and not result.scores["endpoint:down"]
    reasons = list(result.skipped["endpoint:down"].values())  # the first batch's as asked, the others not asked
    assert [why.startswith("not asked: ") for why in reasons].count(False) == 2
    assert all(why.removeprefix("not asked: ").startswith("Endpoint 'down'") for why in reasons)
    assert len(result.skipped["endpoint:down"]) == len(questions.items) and (tmp_path / "e2" / "summary.json").exists()
    # said as a stop, with no verdict built from nothing (it read "+0.0 points vs base, not significant (p = 1.0,
    # McNemar, 0 paired questions)", and the tab's status said "done" with no message: API reviewer)
    assert "cannot be reached" in result.stopped["endpoint:down"]
    (sentence, numbers), = result.verdicts()
    assert sentence.startswith("endpoint:down: no verdict, no question was scored by both it and the base: Endpoint")
    assert numbers["n"] == 0 and "points" not in numbers
    assert "cannot be reached" in json.loads((tmp_path / "e2" / "summary.json").read_text())["stopped"]["endpoint:down"]


@pytest.mark.slow
def test_caption_a_folder_through_the_endpoint_with_four_in_flight(settings_file, picture_files, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for (colour, shape), path in picture_files.items():
        shutil.copy(path, folder / f"{colour}-{shape}.png")
    kept = folder / "red-circle.txt"
    kept.write_text("my own caption", encoding="utf-8")
    done = launch(settings_file, "caption", str(folder), "--endpoint", "peer-es")
    assert done.returncode == 0, done.stderr
    assert "4 requests in flight to endpoint:peer-es" in done.stdout
    assert kept.read_text(encoding="utf-8") == "my own caption"  # never overwritten
    for (colour, shape) in picture_files:
        if (colour, shape) != ("red", "circle"):
            caption = (folder / f"{colour}-{shape}.txt").read_text(encoding="utf-8")
            assert caption.startswith("un ") and len(caption.split()) == 3, caption
    again = launch(settings_file, "caption", str(folder), "--endpoint", "endpoint:peer-es")  # as the model list names it
    assert f"0 captioned, {len(picture_files)} skipped" in again.stdout  # a second run resumes: nothing to do


def _question_set(picture_files, path) -> None:
    rows = [{"question": "What color is the shape?", "options": ["red", "green", "blue", "yellow"],
             "answer": colour, "image": str(file)} for (colour, _), file in picture_files.items()]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_eval_compares_the_local_base_with_the_endpoint(settings_file, picture_files, tmp_path):
    data, table = tmp_path / "colours.jsonl", tmp_path / "results.csv"
    _question_set(picture_files, data)
    done = launch(settings_file, "eval", "--data", str(data), "--endpoint", "peer-en", "--method", "generate",
                  "--output", str(table))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    by_model = {name: [row for row in rows if row["model"] == name] for name in ("base", "endpoint:peer-en")}
    assert all(len(found) == len(picture_files) for found in by_model.values())
    # The endpoint serves the same demo model, so it gives the same answers as the local base.
    answers = {name: [row["Generated Answer"] for row in found] for name, found in by_model.items()}
    assert answers["base"] == answers["endpoint:peer-en"]
    assert sum(r["Is Correct"] == "True" for r in by_model["endpoint:peer-en"]) >= len(picture_files) - 1


@pytest.mark.slow
def test_eval_by_loglik_through_an_endpoint_is_refused_with_what_to_do(settings_file, picture_files, tmp_path):
    data = tmp_path / "colours.jsonl"
    _question_set(picture_files, data)
    done = launch(settings_file, "eval", "--data", str(data), "--endpoint", "peer-en")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--method generate" in done.stderr and "log-likelihood" in done.stderr
    assert "model: " not in done.stderr  # said before the local model loads (it loaded first; API reviewer)
    # a mistyped endpoint is said as such, before the model loads (loglik's refusal called it "an endpoint", and with
    # --method generate it was said after the load: blind tester)
    for method in ("loglik", "generate"):
        typo = launch(settings_file, "eval", "--data", str(data), "--endpoint", "peer-eng", "--method", method)
        assert typo.returncode == 2 and "There is no endpoint named 'peer-eng'" in typo.stderr, typo.stderr
        assert "peer-en" in typo.stderr and "model: " not in typo.stderr


def test_the_evaluate_tab_refuses_loglik_for_an_endpoint_before_a_run_starts(remote, picture_files, tmp_path):
    """/eval_start (the tab's Start) said nothing and returned a run id; the run then failed with the reason."""
    from vlmchat.errors import InputError
    from vlmchat.ui.evaluate_tab import EvalActions

    _question_set(picture_files, tmp_path / "colours.jsonl")
    actions = EvalActions(remote, remote.settings)
    with pytest.raises(InputError, match="endpoint:peer-en is an endpoint.*--method generate"):
        actions.start(str(tmp_path / "colours.jsonl"), ["endpoint:peer-en"], "loglik")
    assert not actions.runs


# ---- hand-off to vLLM / SGLang ------------------------------------------------------------------------------


def _copy_adapter(tmp_path, name: str, config_changes: dict | None = None, extra_key: str | None = None):
    """A copy of demo-es, with its config changed or one more weight added."""
    from safetensors.torch import load_file, save_file

    target = tmp_path / name
    shutil.copytree(ROOT / "adapters" / "demo-es", target)
    config = json.loads((target / "adapter_config.json").read_text()) | (config_changes or {})
    (target / "adapter_config.json").write_text(json.dumps(config))
    if extra_key:
        weights = load_file(target / "adapter_model.safetensors")
        weights[extra_key] = next(iter(weights.values())).clone()
        save_file(weights, target / "adapter_model.safetensors")
    return target


def test_the_shipped_adapter_has_the_layout_vllm_loads(tmp_path):
    from vlmchat.api.handoff import check_for_vllm

    shipped = check_for_vllm("demo-es", ROOT / "adapters" / "demo-es")
    assert shipped.problems == () and shipped.ignored == () and shipped.rank == 8
    vision = check_for_vllm("v", _copy_adapter(tmp_path, "v", extra_key="base_model.model.model.vision_tower."
                                               "vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"))
    assert vision.problems == ()
    assert vision.ignored == ("model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",)
    dora = check_for_vllm("d", _copy_adapter(tmp_path, "d", {"use_dora": True}))
    assert dora.problems and "DoRA" in dora.problems[0]


@pytest.mark.slow
def test_handoff_prints_the_vllm_and_sglang_commands(tmp_path):
    settings_file = write_settings(tmp_path)
    adapters = tmp_path / "adapters"
    shutil.copytree(adapters / "demo-es", adapters / "cut")  # a copy that stopped early
    weights = adapters / "cut" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    shutil.copytree(adapters / "demo-es", adapters / "qwen")  # made for another base
    meta = json.loads((adapters / "qwen" / "vlmchat.json").read_text())
    (adapters / "qwen" / "vlmchat.json").write_text(json.dumps(dict(meta, base_model="Qwen/Qwen2.5-VL-7B-Instruct")))
    done = launch(settings_file, "handoff", "--tensor-parallel", "4", "--nodes", "2")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "# adapter cut: vLLM would refuse it: adapter_model.safetensors is cut short" in out
    assert "# adapter qwen: vLLM would refuse it: trained on Qwen/Qwen2.5-VL-7B-Instruct" in out
    assert "cut=" not in out and "qwen=" not in out
    assert "# adapter demo-es: OK for vLLM" in out
    assert "vllm serve " in out and "--enable-lora" in out and "--tensor-parallel-size 4" in out
    assert "--pipeline-parallel-size 2" in out and "ray start --head" in out
    assert "--lora-modules demo-es=" in out and "--lora-paths demo-es=" in out and "[endpoints.cluster]" in out
    smol = launch(settings_file, "--model", "smolvlm-256m", "handoff", "--tensor-parallel", "4", "--nodes", "2")
    assert "--pipeline-parallel-size" not in smol.stdout and "--tensor-parallel-size 8" in smol.stdout  # no PP
    llama = launch(settings_file, "--model", "llama-3_2-11b-vision", "handoff")
    assert "vllm serve" not in llama.stdout and "sglang.launch_server" in llama.stdout  # vLLM does not serve it
    wrong = launch(settings_file, "handoff", "--nodes", "0")
    assert wrong.returncode == 2 and "--nodes must be 1 or more" in wrong.stderr


@pytest.mark.slow
def test_an_endpoint_added_in_the_model_tab_answers_and_is_remembered_only_when_asked(peer, tmp_path, picture_files):
    """The Model tab's "Add endpoint" form on a second launched app, then Caption through that endpoint."""
    from gradio_client import Client, handle_file

    client_app = LaunchedApp(tmp_path / "app").wait_ready()
    try:
        client = Client(client_app.url, verbose=False)
        # said in the form's words: the settings file's "endpoints.bad needs base_url" named a table nobody wrote
        with pytest.raises(Exception, match="Base URL must start with http:// or https://"):
            client.predict("bad", "ftp://nowhere", "demo", "", 0, 0, 4, False, api_name="/add_endpoint")
        with pytest.raises(Exception, match="Name '' cannot name an endpoint: use letters, digits"):
            client.predict("", peer.url + "v1", "demo", "", 0, 0, 4, False, api_name="/add_endpoint")
        with pytest.raises(Exception, match="holds a space, which API keys never do"):  # pasted with its label
            client.predict("peer", peer.url + "v1", "demo-es", "Key: sk-secret", 0, 0, 4, False, api_name="/add_endpoint")
        added = client.predict("peer", peer.url + "v1", "demo-es", "sk-secret", 0.5, 2.0, 2, False,
                               api_name="/add_endpoint")
        assert "endpoint:peer" in added
        assert not (tmp_path / "app" / "outputs" / "endpoints.json").exists()
        picture = picture_files[("red", "circle")]
        answer = client.predict(handle_file(str(picture)), "", "endpoint:peer", api_name="/caption")
        assert "rojo" in answer
        client.predict("kept", peer.url + "v1", "demo", "sk-kept", 0, 0, 4, True, api_name="/add_endpoint")
        remembered = tmp_path / "app" / "outputs" / "endpoints.json"
        assert oct(remembered.stat().st_mode & 0o777) == "0o600"
        assert "sk-kept" in remembered.read_text() and "sk-secret" not in remembered.read_text()
        assert "sk-" not in (tmp_path / "app" / "settings.toml").read_text()
        # replaced by one not kept: the kept one (and its key) no longer comes back at the next start
        replaced = client.predict("kept", peer.url + "v1", "demo-es", "", 0, 0, 4, False, api_name="/add_endpoint")
        assert "replaces the endpoint of that name" in replaced and "sk-kept" not in remembered.read_text()
        # a /chat cancelled (gradio_client's job.cancel) while a silent endpoint was awaited: the cancel waited for
        # the server's answer (18.9 s of a 20 s one), a local model's took 0.1 s (blind tester)
        class Silent(_Silent):
            released = threading.Event()

        with _served_endpoint(Silent, "silent", "m", "unused") as silent:
            try:
                client.predict("silent", silent.entry.base_url, "m", "", 0, 0, 4, False, api_name="/add_endpoint")
                job = client.submit({"text": "Hello", "files": []}, adapter="endpoint:silent", api_name="/chat")
                time.sleep(1.5)
                started = time.monotonic()
                job.cancel()  # gradio_client's own timeout for it is 5 s
                assert time.monotonic() - started < 3
                # stopped while that request still waits on the server: the app ended only when the request did
                # (Python joins the endpoint's sending threads at exit: up to twice timeout_s); now it drops it
                started = time.monotonic()
                client_app.process.terminate()
                client_app.process.wait(timeout=15)
                assert time.monotonic() - started < 15 and not Silent.released.is_set()
                assert "vlmchat: stopped; 1 request(s) still waiting on an endpoint are dropped." in client_app.output()
            finally:  # the app's request to it ends
                Silent.released.set()
    finally:
        client_app.stop()


class _Misbehaving:
    """A loopback server that answers the way a broken or wrong server does: a web page, a 200 whose body is
    not JSON, a stream dropped before its last chunk, an HTTP 500. Real HTTP; the openai client is real."""

    BODIES = {
        "page": ("text/html", b"<html><body>a web page</body></html>"),
        "badjson": ("application/json", b'{"id": "x", "choices": [ {"message": '),
        "cut": ("text/event-stream", b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
                                     b'"choices":[{"index":0,"delta":{"content":"a fake"},"finish_reason":null}]}\n\n'),
        "e500": ("application/json", b'{"error": {"message": "upstream exploded", "type": "server_error"}}'),
        "midbody": ("application/json", b'{"id": "x", "object": "chat.completion", "choi'),  # then the line drops
        "e502": ("text/html", b"<html><body>502 Bad Gateway</body></html>"),  # a proxy's page
        "sseerror": ("text/event-stream", b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
                                          b'"choices":[{"index":0,"delta":{"content":"par"},"finish_reason":null}]}'
                                          b'\n\ndata: {"error": {"message": "Upstream overloaded", '
                                          b'"type": "server_error"}}\n\n'),
    }
    STATUS = {"e500": 500, "e502": 502}

    def __init__(self, mode: str):
        import http.server
        import threading

        kind, body = self.BODIES[mode]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(_Misbehaving.STATUS.get(mode, 200))
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body) + 500 * (mode == "midbody")))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, base_url: str | None = None):
        from vlmchat.models.endpoints import Endpoint
        from vlmchat.settings import EndpointSettings

        url = base_url or f"http://127.0.0.1:{self.server.server_port}"
        return Endpoint(EndpointSettings(name="odd", base_url=url, model="m", timeout_s=10.0), api_key="unused")


ASK = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
NOT_OPENAI = r"Endpoint 'odd' \(http://127.0.0.1:\d+\) answered, but not in OpenAI's chat completions format; check base_url"


@pytest.mark.parametrize("mode, whole, streamed", [
    # a web page at base_url: named with its base_url instead of "an empty answer; rephrase the question"
    ("page", NOT_OPENAI, NOT_OPENAI),
    # a 200 whose body is not JSON: was a JSONDecodeError traceback that stopped a whole caption or eval run
    ("badjson", NOT_OPENAI, NOT_OPENAI),
    # a stream dropped mid-answer: was shown (and voted on in Compare) as if it were the whole answer
    ("cut", NOT_OPENAI, r"closed the stream before the answer was finished \(it had sent 'a fake'\); ask again"),
    # a 500 is the server failing, not refusing the request
    ("e500", r"failed \(HTTP 500\): upstream exploded; retry later", r"failed \(HTTP 500\): upstream exploded"),
    # the connection closed mid-body: it was "cannot be reached", an unusable endpoint that stopped a whole run
    ("midbody", "closed the connection before its answer was complete", "closed the connection before its answer"),
    # a proxy's 502 page: it read "failed (HTTP 502): Error code: 502" (blind tester)
    ("e502", r"answered HTTP 502 Bad Gateway: a proxy in front of the server could not reach it; try again later\.$",
     r"answered HTTP 502 Bad Gateway: a proxy"),
    # an error event after the stream began is the server failing: it read "refused the request" (blind tester)
    ("sseerror", NOT_OPENAI, r"failed while answering: Upstream overloaded; ask again later or check the server"),
])
def test_a_server_that_misbehaves_is_one_message_naming_it(mode, whole, streamed):
    from vlmchat.errors import InputError

    from vlmchat.errors import EndpointUnusable

    odd = _Misbehaving(mode)
    try:
        endpoint = odd.endpoint()
        with pytest.raises(InputError, match=whole) as raised:
            endpoint.answer(ASK)
        assert not isinstance(raised.value, EndpointUnusable)  # one answer failed; the next may not
        with pytest.raises(InputError, match=streamed):
            list(endpoint.stream(ASK))
    finally:
        odd.server.shutdown()


@contextlib.contextmanager
def _served_endpoint(handler, name: str, model: str, api_key: str):
    """An Endpoint for an OpenAI-compatible server on loopback answering with `handler`, shut down after."""
    import http.server
    import threading

    from vlmchat.models.endpoints import Endpoint
    from vlmchat.settings import EndpointSettings

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Endpoint(EndpointSettings(name=name, base_url=f"http://127.0.0.1:{server.server_port}/v1", model=model,
                                        timeout_s=10.0), api_key=api_key)
    finally:
        server.shutdown()


def _answering(status, body):
    """A handler answering every POST with `status` (an int, or a function called first for each request) and the
    JSON `body` (bytes, or a function of the headers)."""
    import http.server

    class Answering(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            code = status() if callable(status) else status
            data = body(self.headers) if callable(body) else body
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Answering


def test_a_server_that_ignores_stream_and_answers_whole_is_read_as_one_piece():
    """A server that answers a streamed request with one chat.completion (application/json): Chat and Compare said
    "answered, but not in OpenAI's chat completions format; check base_url" while Caption worked (blind tester)."""
    whole = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a red circle"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}).encode()
    with _served_endpoint(_answering(200, whole), "whole", "m", "unused") as endpoint:
        *growing, final = endpoint.stream(ASK)
        assert [a.text for a in growing if a.text] == ["a red circle"] and final.done
        assert (final.text, final.finish_reason, final.completion_tokens) == ("a red circle", "stop", 3)


@pytest.mark.parametrize("status", [400, 500])
def test_a_server_that_echoes_the_key_in_its_error_never_shows_it(status):
    """A proxy or debug server may echo the request's headers in its error; the message was relayed word for word, so
    an endpoint's key (which serves every login) reached the chat, the other logins and the log (API reviewer)."""
    from vlmchat.errors import InputError

    def echo(headers) -> bytes:
        echoed = headers["authorization"]  # as it came, and lower-cased as some servers log it
        return json.dumps({"error": {"message": f"bad header {echoed} ({echoed.lower()})"}}).encode()

    with _served_endpoint(_answering(status, echo), "echo", "m", "sk-SECRET-KEY-123") as endpoint:
        for ask in (endpoint.answer, lambda messages: list(endpoint.stream(messages))):
            with pytest.raises(InputError, match=r"bad header Bearer \*\*\*") as raised:
                ask(ASK)
            assert "secret" not in str(raised.value).lower()


def test_an_endpoint_without_a_key_sends_no_authorization_header(monkeypatch):
    """It sent 'Authorization: Bearer none', which another vlmchat counts as a failed login: a Caption batch locked
    the whole address out for 15 minutes at once (blind tester). No key configured is no key sent, not even
    $OPENAI_API_KEY."""
    from vlmchat.models.endpoints import Endpoint

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-endpoints")
    sent = []

    def answer(headers) -> bytes:
        sent.append(headers.get("authorization"))
        return json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "a red circle"},
                                        "finish_reason": "stop"}]}).encode()

    # no key given in the Model tab's form, and none named by api_key_env in settings.toml (its default, "")
    with _served_endpoint(_answering(200, answer), "keyless", "m", "") as endpoint:
        assert endpoint.answer(ASK).text == "a red circle"
        assert list(endpoint.stream(ASK))[-1].text == "a red circle"
        assert Endpoint(endpoint.entry).answer(ASK).text == "a red circle"
    assert sent == [None, None, None]


def test_a_lockout_is_said_in_the_servers_words_and_stops_a_batch():
    """Another vlmchat's 429 after too many wrong keys read "is busy or over its rate limit; lower max_concurrency or
    retry later" (blind tester): its own message is what says what happened and for how long."""
    from vlmchat.api.serve import _locked_out
    from vlmchat.errors import EndpointUnusable

    with _served_endpoint(_answering(429, _locked_out(900).body), "twin", "m", None) as endpoint:
        with pytest.raises(EndpointUnusable) as raised:  # every request is refused alike for 15 minutes
            endpoint.answer(ASK)
    assert str(raised.value).endswith('refused the request (HTTP 429): "Too many wrong API keys or logins from this '
                                      'address; try again in 15 minutes."'), raised.value


def test_a_reasoning_model_that_refuses_max_tokens_and_temperature_is_asked_as_it_accepts():
    """OpenAI's reasoning models answer 400 to max_tokens ('use max_completion_tokens') and to any temperature but 1;
    Chat always sent both, so every Chat request to them failed. The server here answers as OpenAI's does."""
    import http.server

    from vlmchat.models.endpoints import Endpoint

    seen = []

    class Reasoning(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            seen.append(sorted(key for key in body if key not in ("model", "messages")))
            refusal = None
            if "max_tokens" in body:
                refusal = ("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                           "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
            elif body.get("temperature", 1) != 1:
                refusal = ("Unsupported value: 'temperature' does not support 0 with this model. Only the default "
                           "(1) value is supported.", "temperature", "unsupported_value")
            if refusal:
                data, status, kind = json.dumps({"error": dict(zip(("message", "param", "code"), refusal),
                                                               type="invalid_request_error")}), 400, "application/json"
            elif body.get("stream"):
                chunk = {"id": "r", "object": "chat.completion.chunk", "created": 1, "model": "o",
                         "choices": [{"index": 0, "delta": {"content": "a red circle"}, "finish_reason": "stop"}]}
                data, status, kind = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", 200, "text/event-stream"
            else:
                data, status, kind = json.dumps({
                    "id": "r", "object": "chat.completion", "created": 1, "model": "o",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a red circle"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}), 200, "application/json"
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data.encode())))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args):
            pass

    with _served_endpoint(Reasoning, "o", "o", "unused") as endpoint:
        assert endpoint.answer(ASK).text == "a red circle"
        assert list(endpoint.stream(ASK))[-1].text == "a red circle"
        # learned once: the first answer took three requests, the stream after it one
        assert seen == [["max_tokens", "temperature"], ["max_completion_tokens", "temperature"],
                        ["max_completion_tokens"], ["max_completion_tokens", "stream", "stream_options"]]
        # four sent at once to a fresh endpoint: each learns from its own refusal (three of four failed when the
        # others' learning made a refusal look already handled)
        fresh = Endpoint(endpoint.entry, api_key="unused")
        assert [a.text for a in fresh.answer_each([ASK] * 4)] == ["a red circle"] * 4


def test_a_password_or_key_written_into_base_url_is_masked_in_messages():
    from vlmchat.errors import InputError

    odd = _Misbehaving("e500")
    try:
        port = odd.server.server_port
        endpoint = odd.endpoint(f"http://alice:TOPSECRET@127.0.0.1:{port}/v1?api_key=QUERYSECRET&x=1")
        with pytest.raises(InputError) as raised:
            endpoint.answer(ASK)
        assert f"(http://***@127.0.0.1:{port}/v1?api_key=***&x=***)" in str(raised.value)
        assert "SECRET" not in str(raised.value)
    finally:
        odd.server.shutdown()


class _Silent(http.server.BaseHTTPRequestHandler):
    """A server that takes 20 s to begin its answer (and then closes the connection); sooner once `released` is set
    (a subclass with its own Event lets a test end the wait when it is done with the server)."""

    released = threading.Event()  # never set: the full 20 s

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.released.wait(20)

    def log_message(self, *args):
        pass


def test_a_stream_from_a_server_that_says_nothing_ends_soon_after_stop():
    """Stop while a server had not begun its answer waited for the timeout (the chat's Stop held meanwhile, and the
    next question was lost: blind tester); a reader that closes the stream instead (Gradio's cancel, which cannot
    close a generator while it runs) waited for the server's answer."""
    import threading

    with _served_endpoint(_Silent, "silent", "m", "unused") as endpoint:
        stop = threading.Event()
        threading.Timer(0.5, stop.set).start()
        started = time.perf_counter()
        answers = list(endpoint.stream(ASK, stop=stop))
        assert time.perf_counter() - started < 2 and answers[-1].text == "" and answers[-1].done
        stream = endpoint.stream(ASK)
        started = time.perf_counter()
        assert next(stream).text == "" and time.perf_counter() - started < 1  # the server still says nothing
        stream.close()


@pytest.mark.parametrize("status, body, said", [
    # the server wants a key and none was given: it said "refused the API key; check the key you gave"
    (401, b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}',
     r"needs an API key, and none was given: name the environment variable holding it with api_key_env in "
     r"\[endpoints.plain\], or give the key"),
    # base_url without /v1: a 404 that names no model was blamed on the model (tester)
    (404, b'{"detail": "Not Found"}', r"has no chat completions at http://127.0.0.1:\d+/v1/chat/completions "
                                      r"\(Error code: 404\); check base_url: an OpenAI-compatible server's ends in /v1"),
    (404, b'{"error": {"message": "The model `m` does not exist", "code": "model_not_found"}}',
     r"does not know the model 'm': The model `m` does not exist"),
    # another vlmchat's 404 for a wrong path names its /v1/models route: it read "does not know the model" (tester)
    (404, json.dumps({"error": {"message": "POST /v1/chat/completions/chat/completions: Not Found; vlmchat serves GET "
                                           "/v1/models and POST /v1/chat/completions.", "type": "invalid_request_error",
                                "param": None, "code": "not_found"}}).encode(),
     r"has no chat completions at http://127.0.0.1:\d+/v1/chat/completions \(POST /v1/chat/completions/chat/"),
    # a plain rate limit: the advice, and the server's own words
    (429, b'{"error": {"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}}',
     r'is busy or over its rate limit \(it says "Rate limit reached for requests"\); lower max_concurrency'),
])
def test_a_refusal_says_what_to_change(status, body, said):
    from vlmchat.errors import InputError

    with _served_endpoint(_answering(status, body), "plain", "m", None) as endpoint:
        with pytest.raises(InputError, match=said):
            endpoint.answer(ASK)


def test_endpoint_figures_and_form_checks_say_what_they_mean():
    from vlmchat.errors import SettingsError
    from vlmchat.evaluate.compare import figures
    from vlmchat.models.answers import Answer
    from vlmchat.models.endpoints import check_endpoint

    counted = Answer("a", model="endpoint:x", prompt_tokens=10, completion_tokens=2, latency_s=1.0)
    uncounted = Answer("a", model="endpoint:x", latency_s=1.0)  # priced, but the server sent no usage
    assert "no price set for this endpoint" in figures(counted)
    assert "no cost: the server reported no token counts" in figures(uncounted)
    with pytest.raises(SettingsError, match="max_concurrency must be between 1 and 256 \\(got 0\\)"):
        check_endpoint("zero", "http://127.0.0.1:1/v1", "m", max_concurrency=0)  # it became 4 (tester)


def test_a_batch_run_stops_at_an_endpoint_that_lets_every_request_of_a_batch_time_out(tmp_path, picture_files):
    """A hung server: an eval asked each question of a timed-out batch again alone (20 requests for 6 questions, 85 s
    at timeout_s = 5: blind tester; a 100-question eval at the default 120 s would have waited for hours). Now a batch
    run stops at the first batch whose every request timed out, each asked twice (a timeout is retried once)."""
    from vlmchat.caption.run import CaptionOptions, caption_images
    from vlmchat.errors import EndpointUnusable
    from vlmchat.evaluate.run import EvalOptions, run_eval
    from vlmchat.evaluate.sets import read_eval_set
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    class Hung(_Silent):
        released, asked = threading.Event(), []

        def do_POST(self):  # noqa: N802 - http.server's name
            self.asked.append(self.path)
            super().do_POST()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hung)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = write_settings(tmp_path)
        path.write_text(path.read_text() + f'\n[endpoints.hung]\nbase_url = "http://127.0.0.1:{server.server_port}/v1"'
                        '\nmodel = "m"\ntimeout_s = 1.0\nmax_concurrency = 2\n', encoding="utf-8")
        manager = ModelManager(load_settings(path))
        _question_set(picture_files, tmp_path / "colours.jsonl")
        with pytest.raises(EndpointUnusable, match="'hung' .* did not answer within 1 s"):
            run_eval(manager, read_eval_set(tmp_path / "colours.jsonl"), ["endpoint:hung"], "generate",
                     EvalOptions(batch_size=2), folder=tmp_path / "eval")
        assert len(Hung.asked) == 4  # the first batch's two questions, twice each; none of the other ten
        Hung.asked.clear()
        summary = caption_images(manager, list(picture_files.values())[:6],
                                 CaptionOptions(adapter="endpoint:hung", batch_size=2, fmt="jsonl",
                                                output=tmp_path / "captions.jsonl"))
        assert "did not answer within 1 s" in summary.stopped and len(Hung.asked) == 4 and not summary.captioned
        # one request alone timing out may be one slow answer: the run goes on (reviewer: a 9-question eval's last
        # batch of one stopped the run, and nothing was written)
        result = run_eval(manager, read_eval_set(tmp_path / "colours.jsonl", limit=2), ["endpoint:hung"], "generate",
                          EvalOptions(batch_size=1), folder=tmp_path / "one")
        assert not result.stopped and len(result.skipped["endpoint:hung"]) == 2
        assert all("did not answer within 1 s" in why for why in result.skipped["endpoint:hung"].values())
    finally:
        Hung.released.set()
        server.shutdown()


def test_an_endpoint_run_that_stops_after_answering_some_keeps_and_writes_them(tmp_path, picture_files):
    """A server that answered two questions, then refused the key: the run raised, and the answers it had were
    not written (reviewer). Now they are, with the reason for the others."""
    from vlmchat.evaluate.run import EvalOptions, run_eval
    from vlmchat.evaluate.sets import read_eval_set
    from vlmchat.models.manager import ModelManager
    from vlmchat.settings import load_settings

    answer = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "red"},
                                      "finish_reason": "stop"}]}).encode()
    refused = json.dumps({"error": {"message": "bad key", "type": "invalid_request_error"}}).encode()

    served = []

    def status() -> int:
        served.append(1)
        return 200 if len(served) <= 2 else 401

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), _answering(status, lambda headers: answer if len(served) <= 2 else refused))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = write_settings(tmp_path)
        path.write_text(path.read_text() + f'\n[endpoints.tiring]\nbase_url = "http://127.0.0.1:{server.server_port}'
                        '/v1"\nmodel = "m"\nmax_concurrency = 1\n', encoding="utf-8")
        _question_set(picture_files, tmp_path / "colours.jsonl")
        result = run_eval(ModelManager(load_settings(path)), read_eval_set(tmp_path / "colours.jsonl"),
                          ["endpoint:tiring"], "generate", EvalOptions(batch_size=2), folder=tmp_path / "eval")
        assert len(result.scores["endpoint:tiring"]) == 2 and "needs an API key" in result.stopped["endpoint:tiring"]
        assert (tmp_path / "eval" / "results.csv").is_file()
    finally:
        server.shutdown()
