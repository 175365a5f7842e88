"""The OpenAI-compatible API under /v1, driven by the official `openai` client against a launched app.

The app is `python launch.py` in a child process with the shipped demo model and its Spanish
adapter demo-es: "a red circle" in English, "un círculo rojo" with demo-es. Nothing is mocked.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, LaunchedApp

openai = pytest.importorskip("openai")

RED_CIRCLE = ROOT / "examples" / "red-circle.png"
PROMPT = "Describe the image."


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def ask(image_url: str, text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def served(app):
    """The session's launched app (conftest.py): `python launch.py` on the demo model, on loopback."""
    return app


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "v1", api_key="unused-on-loopback", max_retries=0)


@pytest.mark.slow
def test_models_lists_the_base_and_every_adapter(client):
    assert [model.id for model in client.models.list()] == ["demo", "demo-es"]


@pytest.mark.slow
@pytest.mark.parametrize("model, expected", [("demo", "a red circle"), ("base", "a red circle"),
                                             ("demo-es", "un círculo rojo")])
def test_chat_with_an_image_answers_with_the_model_named_per_request(client, model, expected):
    response = client.chat.completions.create(model=model, messages=ask(data_url(RED_CIRCLE)))
    assert response.choices[0].message.content == expected
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage.prompt_tokens > 10 and usage.completion_tokens >= 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.slow
def test_streamed_chat_sends_deltas_then_usage(client):
    chunks = list(client.chat.completions.create(model="demo-es", messages=ask(data_url(RED_CIRCLE)), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip() == "un círculo rojo"
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) >= 2  # really streamed
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 3
    # OpenAI: "All other chunks will also include a usage field, but with a null value"
    assert all("usage" in chunk.model_fields_set and chunk.usage is None for chunk in chunks[:-1])
    assert len({(chunk.id, chunk.created, chunk.model) for chunk in chunks}) == 1


def test_every_chunk_of_a_stream_has_the_streams_id_created_and_model():
    """`created` was the time of each chunk, so it changed within a stream that crossed a second (blind tester);
    OpenAI sends the same id, created and model in every chunk."""
    from vlmchat.api.serve import stream_events
    from vlmchat.models.answers import Answer

    def answers():
        yield Answer("a", done=False)
        time.sleep(1.05)
        yield Answer("a red", finish_reason="stop")

    events = list(stream_events(answers(), "demo", "chatcmpl-1", include_usage=True))
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert events[-1] == "data: [DONE]\n\n" and len(chunks) == 5
    assert len({(chunk["id"], chunk["created"], chunk["model"]) for chunk in chunks}) == 1


@pytest.mark.slow
def test_stop_and_max_tokens_end_the_answer(client):
    stopped = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), stop=[" circle"])
    assert stopped.choices[0].message.content == "a red"
    cut = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), max_tokens=1)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 1


@pytest.mark.slow
def test_concurrent_clients_on_two_adapters_each_get_their_own_answer(client):
    answers: dict[int, str] = {}

    def one(index: int) -> None:
        model = "demo-es" if index % 2 else "demo"
        answers[index] = client.chat.completions.create(model=model, messages=ask(data_url(RED_CIRCLE))) \
            .choices[0].message.content

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == {i: "un círculo rojo" if i % 2 else "a red circle" for i in range(8)}


@pytest.mark.slow
def test_a_bad_image_is_a_400_in_openais_error_shape(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ask("data:image/png;base64," +
                                                                  base64.b64encode(b"not a picture").decode()))
    error = raised.value.body
    assert raised.value.status_code == 400 and error["code"] == "invalid_image"
    assert error["param"] == "messages[0].content[0].image_url" and "not an image" in error["message"]


@pytest.mark.slow
def test_an_http_image_url_is_refused_without_fetching_it(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ask("http://169.254.169.254/latest/meta-data"))
    assert raised.value.body["code"] == "remote_images_disabled"
    assert "SSRF" in raised.value.body["message"] and "data: URL" in raised.value.body["message"]


@pytest.mark.slow
def test_unknown_model_is_a_404_naming_the_models_there_are(client, served):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ask(data_url(RED_CIRCLE)))
    assert raised.value.body["code"] == "model_not_found" and "demo-es" in raised.value.body["message"]
    # An adapter that is there but made for another base says so (it read as a typo: "does not exist here").
    adapters = Path(served.log.name).parent / "adapters"
    shutil.copytree(adapters / "demo-es", adapters / "for-qwen")
    meta = json.loads((adapters / "for-qwen" / "vlmchat.json").read_text())
    (adapters / "for-qwen" / "vlmchat.json").write_text(json.dumps({**meta, "base_model": "Qwen/Qwen2-VL-2B-Instruct"}))
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="for-qwen", messages=ask(data_url(RED_CIRCLE)))
    assert raised.value.body["code"] == "model_not_found"
    assert "trained on Qwen/Qwen2-VL-2B-Instruct; the loaded model is demo" in raised.value.body["message"], raised.value
    shutil.rmtree(adapters / "for-qwen")


def test_base_is_a_model_to_retrieve_an_empty_name_is_refused_and_the_list_is_stable(client):
    """`model="base"` answers, so `models.retrieve("base")` finds it (tools check a model before using it); an empty
    name was answered by the base (OpenAI requires a model); `created` was the time of each call (API reviewer)."""
    assert client.models.retrieve("base").id == "demo" and client.models.retrieve("demo-es").id == "demo-es"
    assert client.chat.completions.create(model="base", messages=ask(data_url(RED_CIRCLE))).model == "demo"
    streamed = client.chat.completions.create(model="Base", messages=ask(data_url(RED_CIRCLE)), stream=True)
    assert {chunk.model for chunk in streamed} == {"demo"}  # the model that answered, as OpenAI names it
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="", messages=ask(data_url(RED_CIRCLE)))
    assert raised.value.body["param"] == "model" and "model is empty" in raised.value.body["message"]
    first = [model.created for model in client.models.list()]
    time.sleep(1.1)
    assert [model.created for model in client.models.list()] == first
    assert client.models.retrieve("demo").created == first[0]


@pytest.mark.slow
def test_a_malformed_request_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=[{"role": "robot", "content": "hi"}])
    assert raised.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), temperature=9)
    assert "temperature" in raised.value.body["message"]
    # Wrong types are refused as OpenAI refuses them, not read as something else ("yes" as true, "5" as 5).
    for wrong in ({"max_tokens": "5"}, {"stream": "yes"}, {"seed": 1.5}, {"temperature": "0"},
                  {"stream_options": {"include_usage": "no"}}):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), extra_body=wrong)
        assert raised.value.body["param"].startswith(next(iter(wrong))), (wrong, raised.value.body)
    # a field of two types (text or parts) is named as the API names it, with both types it may be
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": 5}])
    assert raised.value.body["param"] == "messages[0].content", raised.value.body
    assert "a valid string or a valid array" in raised.value.body["message"]
    for part, param in (({"text": "hi"}, "messages[0].content[0].type"), ({"type": "text"}, "messages[0].content[0].text")):
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": [part]}])
        assert raised.value.body["param"] == param and "None" not in raised.value.body["message"], raised.value.body
    # null is "not given" for each optional field, as OpenAI's reference has it (n and stream were refused)
    answer = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)),
                                            extra_body={"n": None, "stream": None, "max_tokens": None})
    assert answer.choices[0].message.content == "a red circle"


# ---- login required: a Bearer key on every /v1 route -----------------------------------------------------


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """The app on 0.0.0.0 with a login: the API key is generated and printed once."""
    launched = LaunchedApp(tmp_path_factory.mktemp("exposed"), "--host", "0.0.0.0", "--auth", "ana:s3cret-pass",
                           env={"VLMCHAT_API_KEY": ""},  # wrong keys are sent on purpose: room for them, no waits
                           login_attempts=20, login_delay_s=0.01).wait_ready()
    yield launched
    launched.stop()


def _printed_key(app: LaunchedApp) -> str:
    keys = re.findall(r"Bearer (sk-vlmchat-\S+)", app.output())
    assert len(keys) == 1, app.output()  # printed once
    return keys[0]


@pytest.mark.slow
def test_login_mode_needs_the_bearer_key_on_every_v1_route(exposed):
    key = _printed_key(exposed)
    for wrong in ("unused", "ana:s3cret-pass", key[:-1]):
        anonymous = openai.OpenAI(base_url=exposed.url + "v1", api_key=wrong, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as raised:
            anonymous.models.list()
        assert raised.value.status_code == 401 and "Bearer" in raised.value.body["message"]
        assert raised.value.body["message"].startswith("The API key sent is not this server's")
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)))
    for path in ("v1/models", "v1/no-such-route", "v1"):  # no /v1 route answers, not even with a 404
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(exposed.url + path, timeout=10)
        assert raised.value.code == 401
        assert "requires an API key" in raised.value.read().decode()
    keyed = openai.OpenAI(base_url=exposed.url + "v1", api_key=key, max_retries=0)
    assert [model.id for model in keyed.models.list()] == ["demo", "demo-es"]
    answer = keyed.chat.completions.create(model="demo-es", messages=ask(data_url(RED_CIRCLE)))
    assert answer.choices[0].message.content == "un círculo rojo"


# ---- in process: the batcher and the busy queue ----------------------------------------------------------


@pytest.fixture(scope="module")
def small_queue(demo_settings):
    """A second manager on the demo model whose queue holds one request."""
    from vlmchat.models.manager import ModelManager

    manager = ModelManager(demo_settings.override("server", max_queue=1))
    manager.load()
    yield manager
    manager.unload()


def test_a_full_queue_is_a_429(small_queue, demo_settings):
    from fastapi.testclient import TestClient

    from vlmchat.api.serve import ApiKey, build_api

    api = build_api(small_queue, small_queue.settings, ApiKey())
    client = openai.OpenAI(base_url="http://testserver", api_key="x", http_client=TestClient(api), max_retries=0)
    with small_queue.batcher.admit():  # one request already waiting or running
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)))
    assert raised.value.body["code"] == "queue_full" and "max_queue" in raised.value.body["message"]
    assert raised.value.response.headers["retry-after"] == "1"  # how long OpenAI's client waits before it retries
    assert client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE))) \
        .choices[0].message.content == "a red circle"


def test_v1_waits_for_a_load_in_progress(manager):
    """While the Model tab loaded the model again, /v1 answered 404 model_not_found (which the openai client does
    not retry) and GET /v1/models listed nothing; Chat waited for the load and answered (blind tester)."""
    from fastapi.testclient import TestClient

    from vlmchat.api.serve import ApiKey, build_api

    client = openai.OpenAI(base_url="http://testserver", api_key="x", max_retries=0,
                           http_client=TestClient(build_api(manager, manager.settings, ApiKey())))
    asks = (lambda: [model.id for model in client.models.list()][:1],
            lambda: client.models.retrieve("demo").id,
            lambda: client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)))
            .choices[0].message.content)
    for asked, expected in zip(asks, (["demo"], "demo", "a red circle")):
        loading = threading.Thread(target=manager.load)
        loading.start()
        deadline = time.monotonic() + 30
        while manager.info is not None and time.monotonic() < deadline:  # the old model freed, the new one coming
            time.sleep(0.001)
        assert manager.info is None, "the load was over before a request could be sent during it"
        assert asked() == expected
        loading.join(60)


def _red_circle_conversation() -> list[dict]:
    from vlmchat.images import load_image

    return [{"role": "user", "content": [{"type": "image", "image": load_image(RED_CIRCLE)},
                                         {"type": "text", "text": PROMPT}]}]


def test_requests_that_arrive_together_share_one_batch(manager):
    from vlmchat.models.manager import GenerationParams

    conversation, answers, before = _red_circle_conversation(), {}, len(manager.batcher.batches)
    tickets = [manager.batcher.admit(coming=True) for _ in range(6)]  # as /v1 does when six requests arrive

    def one(index: int) -> None:
        with tickets[index]:
            time.sleep(0.002 * index)  # their bodies are read at slightly different times
            answers[index] = manager.answer(conversation, GenerationParams(max_new_tokens=8), "base",
                                            tickets[index]).text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: "a red circle" for i in range(6)}
    assert manager.batcher.batches[before:] == [6]  # one generate call instead of six


def test_equal_seeded_requests_that_arrive_together_get_equal_answers(manager):
    """OpenAI's `seed`: the same request and seed, the same answer. Five seed-1 requests at temperature 2 sent
    together shared one batch, which draws its rows from one seeded generator: 2 of 5 answers differed (API
    reviewer). A request that samples with a seed is answered in a batch of its own."""
    from vlmchat.models.manager import GenerationParams

    conversation, params = _red_circle_conversation(), GenerationParams(max_new_tokens=8, temperature=2.0, seed=1)
    alone = manager.answer(conversation, params, "base").text
    answers, before = {}, len(manager.batcher.batches)
    tickets = [manager.batcher.admit(coming=True) for _ in range(4)]

    def one(index: int) -> None:
        with tickets[index]:
            answers[index] = manager.answer(conversation, params, "base", tickets[index]).text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {i: alone for i in range(4)}
    assert manager.batcher.batches[before:] == [1, 1, 1, 1]


def test_a_lone_request_does_not_wait_for_the_batch_window(manager):
    from vlmchat.models.batcher import Batcher
    from vlmchat.models.manager import GenerationParams

    batcher = Batcher(manager.answer_batch, window_s=30.0)
    started = time.monotonic()
    answer = batcher.submit(_red_circle_conversation(), GenerationParams(max_new_tokens=8), None)
    assert answer.text == "a red circle" and time.monotonic() - started < 15 and batcher.batches == [1]


@pytest.mark.slow
def test_a_streamed_answer_never_shows_the_stop_string(client):
    """...and says what the same request answers whole: the text before the stop string, as OpenAI returns it."""
    chunks = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), stream=True,
                                            stop=["circle"])
    whole = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), stop=["circle"])
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole.choices[0].message.content == "a red "


@pytest.mark.slow
def test_the_api_asks_the_model_as_chat_does(client):
    """The demo answers only about a picture (its recipe's needs_image): a text-only request is a 400 saying so,
    not an invented answer; it saw one picture per chat, so a new picture starts the conversation afresh."""
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello"}])
    assert raised.value.body["param"] == "messages" and "image_url" in raised.value.body["message"]
    blue = data_url(ROOT / "examples" / "blue-square.png")
    turns = ask(data_url(RED_CIRCLE)) + [{"role": "assistant", "content": "a red circle"}] + ask(blue)
    assert client.chat.completions.create(model="demo", messages=turns).choices[0].message.content == "a blue square"
    both = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(RED_CIRCLE)}},
                                         {"type": "image_url", "image_url": {"url": blue}},
                                         {"type": "text", "text": "Describe the image."}]}]
    with pytest.raises(openai.BadRequestError, match="one picture at a time"):
        client.chat.completions.create(model="demo", messages=both)


@pytest.mark.slow
def test_parameters_out_of_range_are_400s_naming_the_apis_own_field(client):
    cases = [({"max_tokens": 0}, "max_tokens"), ({"max_completion_tokens": 0}, "max_completion_tokens"),
             ({"top_p": 0}, "top_p"), ({"temperature": 9}, "temperature"), ({"seed": 2**64}, "seed"),
             ({"stream_options": {"include_usage": True}}, "stream_options"), ({"logprobs": True}, "logprobs"),
             ({"response_format": {"type": "json_object"}}, "response_format"),
             ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
             # accepted and ignored before (API reviewer): a banned token was still answered
             ({"logit_bias": {"360": -100}}, "logit_bias"), ({"presence_penalty": 2}, "presence_penalty"),
             ({"frequency_penalty": -1.5}, "frequency_penalty"), ({"top_logprobs": 3}, "top_logprobs"),
             ({"extra_body": {"functions": [{"name": "f", "parameters": {"type": "object"}}]}}, "functions"),
             ({"extra_body": {"function_call": "auto"}}, "function_call"),
             # answered in text before, 200, to a client that asked for audio (shared-app reviewer)
             ({"modalities": ["text", "audio"]}, "modalities"), ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
             # ignored before, 200: the client took the answer as searched on the web (API reviewer)
             ({"extra_body": {"web_search_options": {}}}, "web_search_options")]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), **extra)
        assert raised.value.body["param"] == param and param in raised.value.body["message"], extra
    answered = client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), presence_penalty=0,
                                              frequency_penalty=0, logit_bias={},  # OpenAI's defaults: nothing asked
                                              extra_body={"function_call": "none"})  # (verifying reviewer)
    assert answered.choices[0].message.content == "a red circle"
    history = ask(data_url(RED_CIRCLE)) + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    with pytest.raises(openai.BadRequestError) as raised:  # an agent's history: why, not only which roles there are
        client.chat.completions.create(model="demo", messages=history)
    # the assistant's tool_calls passed as an empty turn before (API reviewer); a field as README writes one
    assert raised.value.body["param"] == "messages[1].tool_calls"
    assert "tool_calls is part of a tool history, and tools are not supported here" in raised.value.body["message"]
    old_style = [history[0], {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}]
    with pytest.raises(openai.BadRequestError) as raised:  # the older form passed (verifying reviewer)
        client.chat.completions.create(model="demo", messages=old_style)
    assert raised.value.body["param"] == "messages[1].function_call"
    history[1] = {"role": "assistant", "content": "calling f"}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=history)
    assert raised.value.body["param"] == "messages[2].role"
    assert "a 'tool' message is a tool result, and tools are not supported here" in raised.value.body["message"]
    ultra = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(RED_CIRCLE),
                                                                              "detail": "ultra"}}]}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ultra)
    assert raised.value.body["param"] == "messages[0].content[0].image_url.detail"
    in_system = [{"role": "system", "content": ask(data_url(RED_CIRCLE))[0]["content"]}] + ask(data_url(RED_CIRCLE))
    with pytest.raises(openai.BadRequestError) as raised:  # OpenAI takes pictures in user messages only
        client.chat.completions.create(model="demo", messages=in_system)
    assert raised.value.body["param"] == "messages[0]" and "user messages only" in raised.value.body["message"]


@pytest.mark.slow
def test_a_conversation_longer_than_the_model_reads_is_refused_at_once(client, served):
    """The demo reads 1,024 tokens (max_position_embeddings): a 100k-token question is a 400
    context_length_exceeded in well under the seconds one answer takes, not minutes of a forward pass that
    holds up every other request; the next request is answered as usual."""
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE), PROMPT * 20000))
    assert time.monotonic() - started < 10
    assert raised.value.body["code"] == "context_length_exceeded" and "1,024" in raised.value.body["message"]
    assert client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE))).choices[0] \
        .message.content == "a red circle"
    # the tokenizer's own warning ("will result in indexing errors") is not left in the server's terminal
    assert "Token indices sequence length" not in served.output()


def test_remote_images_are_fetched_only_when_allowed(manager, demo_settings):
    """A real HTTP server on loopback holds the picture; the API fetches it only with api.allow_remote_images."""
    import functools
    import http.server

    from fastapi.testclient import TestClient

    from vlmchat.api.serve import ApiKey, build_api

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(RED_CIRCLE.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{RED_CIRCLE.name}"
    try:
        allowed = demo_settings.override("api", allow_remote_images=True)
        client = openai.OpenAI(base_url="http://testserver", api_key="x", max_retries=0,
                               http_client=TestClient(build_api(manager, allowed, ApiKey())))
        assert client.chat.completions.create(model="demo", messages=ask(url)).choices[0].message.content \
            == "a red circle"
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="demo", messages=ask(url.replace(RED_CIRCLE.name, "gone.png")))
        assert raised.value.body["code"] == "invalid_image_url"
        assert "its server answered 404 File not found" in raised.value.body["message"]
        # An app others reach fetches public addresses only: it fetched this machine's for any caller and said
        # open, closed and redirecting ports apart (shared-app reviewer).
        exposed = allowed.override("server", host="0.0.0.0")
        client = openai.OpenAI(base_url="http://testserver", api_key="x", max_retries=0,
                               http_client=TestClient(build_api(manager, exposed, ApiKey())))
        for inside in (url, "http://10.1.2.3/x.png", "http://[::1]:9/x.png", "http://localhost:1/x.png"):
            with pytest.raises(openai.BadRequestError) as raised:
                client.chat.completions.create(model="demo", messages=ask(inside))
            assert "only from public internet addresses" in raised.value.body["message"], inside
    finally:
        server.shutdown()


class _AwkwardImageHost(http.server.BaseHTTPRequestHandler):
    """/moved redirects; /drip sends a byte every 0.2 s, never 20 s without one (no read times out)."""

    def do_GET(self):
        if self.path == "/page":
            body = b"<html><body>Not found</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/elsewhere.png")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the fetch gave up

    def log_message(self, *args):
        pass


def test_a_remote_image_that_redirects_or_drips_is_refused_in_bounded_time(monkeypatch):
    """A host sending a byte a second held a queue slot for ever (20 s a read, no deadline in all: 32 such
    requests made every caller a 429; API reviewer); a redirect was refused in httpx's words."""
    from vlmchat.api import serve

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AwkwardImageHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(serve, "FETCH_SECONDS", 1)
    try:
        with pytest.raises(serve.ApiError, match=r"redirects to /elsewhere\.png, and redirects are not followed"):
            serve._fetch(f"{base}/moved", "image", 10**6)
        started = time.monotonic()
        with pytest.raises(serve.ApiError, match="took over 1 s to download; send the image as a data: URL"):
            serve._fetch(f"{base}/drip", "image", 10**6)
        assert time.monotonic() - started < 3
    finally:
        server.shutdown()


def test_a_fetched_page_that_is_not_a_picture_is_named_as_a_sent_one_is(demo_settings):
    """A fetched web page was a 400 with param "messages" and no code; the same bytes as a data: URL name the part."""
    import dataclasses

    from vlmchat.api import serve

    settings = dataclasses.replace(demo_settings, api=dataclasses.replace(demo_settings.api, allow_remote_images=True))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AwkwardImageHost)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    part = "messages[0].content[0].image_url"
    try:
        with pytest.raises(serve.ApiError) as raised:
            serve._image(f"http://127.0.0.1:{server.server_address[1]}/page", part, settings)
        assert (raised.value.status, raised.value.param, raised.value.code) == (400, part, "invalid_image")
    finally:
        server.shutdown()


def test_a_request_over_the_size_limit_is_refused_before_it_is_read_whole(manager, demo_settings):
    from fastapi.testclient import TestClient

    from vlmchat.api.serve import ApiKey, build_api

    small = demo_settings.override("server", max_upload_mb=1)  # a request may hold 4 pictures' size: 4 MB
    client = openai.OpenAI(base_url="http://testserver", api_key="x", max_retries=0,
                           http_client=TestClient(build_api(manager, small, ApiKey())))
    huge = "data:image/png;base64," + "A" * (5 * 2**20)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="demo", messages=ask(huge))
    assert raised.value.status_code == 413 and raised.value.body["code"] == "request_too_large"
    assert manager.batcher.in_flight == 0  # its place in the queue was given back
    # one picture over its limit, in a request under the request's: the advice was to "name a file by its path where
    # a path is taken (a dataset file)", which an API caller cannot (blind tester)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="demo", messages=ask("data:image/png;base64," + "A" * (2 * 2**20)))
    error = raised.value.body
    assert error["param"] == "messages[0].content[0].image_url" and "path" not in error["message"]
    assert "over the 1 MB limit for a picture (server.max_upload_mb); send a smaller picture" in error["message"]


@pytest.mark.slow
def test_a_declared_body_over_the_limit_is_refused_from_its_header(served):
    """A reviewer's request declared 1.1 GB and sent nothing: no answer after 40 s (the body was awaited); sent
    whole, 1 GB was held in memory before the 413."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", "1100000000")
    connection.endheaders()  # and nothing of the body
    reply = connection.getresponse()
    body = json.loads(reply.read())
    connection.close()
    assert reply.status == 413 and body["error"]["code"] == "request_too_large" and "100 MB" in body["error"]["message"]
