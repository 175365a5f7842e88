"""Streamed /v1 requests that arrive together share one batched generation, each row streamed to its own client.

The API is vlmchat's own FastAPI app served by uvicorn on loopback in this process (so the test can
read the batcher's recorded batch sizes), driven by the official `openai` client; the models are
the shipped demo ("a red circle", "un círculo rojo" with demo-es) and a random-weight LLaVA that
never ends by itself. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from conftest import free_port
from test_openai_api import PROMPT, RED_CIRCLE, ask, data_url

openai = pytest.importorskip("openai")


@contextlib.contextmanager
def served(manager):
    """An openai client for `manager`'s /v1 API, served over HTTP on 127.0.0.1 until the block ends."""
    import uvicorn

    from vlmchat.api.serve import ApiKey, build_api

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(manager, manager.settings, ApiKey()), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}", api_key="unused-on-loopback", max_retries=0)
    finally:
        server.should_exit = True
        thread.join(10)


def loaded(settings, model: str | None = None):
    from vlmchat.models.manager import ModelManager

    manager = ModelManager(settings.override("api", batch_window_ms=1000.0))
    manager.load(model)
    return manager


def together(manager, count: int, run) -> dict:
    """run(index) for each index in threads whose requests are all queued before any batch starts: a request
    still being read (a ticket taken on arrival, as /v1 takes one) holds the batch window open until then."""
    results: dict = {}
    reading = manager.batcher.admit(coming=True)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(i))) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(manager.batcher.pending) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(manager.batcher.pending) == count, "the requests did not all arrive before a batch started"
    reading.release()
    for thread in threads:
        thread.join(120)
    return results


@pytest.fixture(scope="module")
def demo(demo_settings):
    manager = loaded(demo_settings)
    # A window (longer than the setting allows) in which `together` decides when the batch starts: with 1 s, the
    # first pair's batch could start before the other pair had arrived (the helper then waited its whole minute).
    manager.batcher.window_s = 30.0
    with served(manager) as client:
        yield manager, client
    manager.unload()


@pytest.mark.slow
def test_concurrent_streams_share_batches_and_each_gets_its_own_answer(demo):
    manager, client = demo
    models = ["demo", "demo-es", "demo", "demo-es"]
    before = len(manager.batcher.batches)

    def stream(index: int) -> tuple[str, int, object]:
        chunks = list(client.chat.completions.create(model=models[index], messages=ask(data_url(RED_CIRCLE)),
                                                     stream=True, stream_options={"include_usage": True}))
        deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
        return "".join(deltas), len(deltas), chunks[-1].usage

    streamed = together(manager, 4, stream)
    assert sorted(manager.batcher.batches[before:]) == [2, 2]  # one generate per adapter instead of four
    for index, model in enumerate(models):
        whole = client.chat.completions.create(model=model, messages=ask(data_url(RED_CIRCLE)))
        text, deltas, usage = streamed[index]
        assert text == whole.choices[0].message.content == ("un círculo rojo" if index % 2 else "a red circle")
        assert deltas >= 2  # really streamed, token by token
        assert (usage.prompt_tokens, usage.completion_tokens) == \
            (whole.usage.prompt_tokens, whole.usage.completion_tokens)


@pytest.mark.slow
def test_a_lone_stream_does_not_wait_for_the_batch_window(demo):
    manager, client = demo
    before = len(manager.batcher.batches)
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="demo", messages=ask(data_url(RED_CIRCLE)), stream=True))
    assert time.monotonic() - started < 1.0 < manager.batcher.window_s  # nothing on its way: it starts at once
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a red circle"
    assert manager.batcher.batches[before:] == [1]


def test_a_row_cut_by_the_stop_string_ends_while_the_batch_goes_on(manager, picture_files):
    from vlmchat.images import load_image
    from vlmchat.models.manager import GenerationParams

    pictures = [picture_files[("red", "circle")], next(p for (colour, _), p in picture_files.items() if colour != "red")]
    conversations = [[{"role": "user", "content": [{"type": "image", "image": load_image(path)},
                                                   {"type": "text", "text": PROMPT}]}] for path in pictures]
    params, before = GenerationParams(max_new_tokens=8, stop_strings=(" red",)), len(manager.batcher.batches)
    answers = together(manager, 2, lambda i: list(manager.stream_answer(conversations[i], params)))
    assert manager.batcher.batches[before:] == [2]
    assert answers[0][-1].text == "a" and answers[0][-1].completion_tokens == 2  # " red" was its 2nd token
    assert answers[1][-1].text == manager.generate(conversations[1], params) and answers[1][-1].completion_tokens == 4


@pytest.mark.slow
def test_a_client_that_disconnects_does_not_break_the_others(demo_settings, random_llava):
    """Two endless streams in one batch: the first client leaves, the second keeps streaming, then leaves too;
    the generation stops when nobody reads it."""
    manager = loaded(demo_settings, str(random_llava))
    before = len(manager.batcher.batches)

    def stream(index: int) -> int:
        stream = client.chat.completions.create(model="base", messages=ask(data_url(RED_CIRCLE)), stream=True,
                                                max_tokens=4000)
        pieces = 0
        for chunk in stream:
            pieces += bool(chunk.choices and chunk.choices[0].delta.content)
            if pieces == (3 if index == 0 else 40):
                break
        stream.close()
        return pieces

    with served(manager) as client:
        assert together(manager, 2, stream) == {0: 3, 1: 40}
        assert manager.batcher.batches[before:] == [2]
        assert manager.lock.acquire(timeout=30)  # 4000 tokens would take minutes
        manager.lock.release()
        deadline = time.monotonic() + 10
        while manager.batcher.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.batcher.in_flight == 0
    manager.unload()


EXIT_DURING_A_BATCH = """
import sys, threading, time
from PIL import Image
from vlmchat.models.manager import GenerationParams, ModelManager
from vlmchat.settings import load_settings

manager = ModelManager(load_settings(sys.argv[1]))
manager.load(sys.argv[2])
ask = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 64), "red")},
                                    {"type": "text", "text": "Describe the image."}]}]
manager.model.generation_config.min_new_tokens = 600  # a few seconds of generating
threading.Thread(target=manager.generate, args=(ask, GenerationParams(max_new_tokens=600)), daemon=True).start()
while not manager.batcher.batches:
    time.sleep(0.01)
time.sleep(0.2)
print("exiting while a batch generates" if not manager.batcher.idle.is_set() else "the batch ended first", flush=True)
"""


def test_the_process_exits_cleanly_while_a_batch_generates(demo_settings, random_llava, tmp_path):
    """A script (or a stream's reader) that ends while the batcher's worker is inside `generate`: torch aborted
    the process at exit ("terminate called without an active exception", exit 134) before the batch was let finish."""
    import subprocess
    import sys

    from conftest import ROOT, write_settings

    done = subprocess.run([sys.executable, "-c", EXIT_DURING_A_BATCH, str(write_settings(tmp_path)), str(random_llava)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "exiting while a batch generates" in done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
