"""GPU work is queued: concurrent requests all get right answers; a full queue says it is busy."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client, handle_file

from conftest import LaunchedApp


def test_eight_concurrent_chats_all_answer_correctly(app, picture_files):
    cases = list(picture_files.items())[:8]

    def ask(case):
        (colour, shape), path = case
        client = Client(app.url, verbose=False)
        return client.predict({"text": "Describe the image.", "files": [handle_file(str(path))]}, api_name="/chat")

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, cases))
    assert [a.strip() for a in answers] == [f"a {c} {s}" for (c, s), _ in cases]


@pytest.fixture(scope="module")
def slow_app(tmp_path_factory, random_llava):
    """An app on a random model (it never stops by itself) with room for one waiting request."""
    folder = tmp_path_factory.mktemp("slow")
    app = LaunchedApp(folder, "--model", str(random_llava), max_queue=1, concurrency_limit=1).wait_ready()
    yield app
    app.stop()


def test_a_full_queue_gives_a_busy_message(slow_app, picture_files):
    """Chat answers do not wait for a queue slot: they go to the model's batcher, which admits server.max_queue
    (here 1) and says at once that the model is busy to the next."""
    message = {"text": "Describe the image.", "files": [handle_file(str(picture_files[("red", "circle")]))]}
    long_job = Client(slow_app.url, verbose=False).submit(message, 3000, api_name="/chat")
    time.sleep(1.5)
    try:
        answer = Client(slow_app.url, verbose=False).predict(message, 5, api_name="/chat")
        assert answer.startswith("⚠️ The model is busy") and "server.max_queue = 1" in answer
    finally:
        long_job.cancel()


def _slow_endpoint(seconds_per_word: float, words: int):
    """A loopback OpenAI-compatible server that streams its answer one word every `seconds_per_word` (a slow
    hosted model)."""
    import http.server
    import json

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            for index in range(words + 1):
                delta, finish = ({"content": "slow "}, None) if index < words else ({}, "stop")
                chunk = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "slow",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(seconds_per_word)
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_slow_endpoint_does_not_hold_up_chats_with_the_local_model(slow_app, picture_files):
    """One tab asks a slow hosted model; another tab's chat with the local model answers meanwhile (both took
    Chat's one queue slot in turn: the local answer waited for the whole slow one)."""
    server = _slow_endpoint(1.0, 10)
    try:
        client = Client(slow_app.url, verbose=False)
        client.predict("sluggish", f"http://127.0.0.1:{server.server_port}/v1", "slow", "", 0, 0, 4, False,
                       api_name="/add_endpoint")
        message = {"text": "Describe the image.", "files": [handle_file(str(picture_files[("red", "circle")]))]}
        slow = Client(slow_app.url, verbose=False).submit(message, 64, 0, 1, -1, "endpoint:sluggish", api_name="/chat")
        time.sleep(1.5)
        local = Client(slow_app.url, verbose=False).predict(message, 5, api_name="/chat")
        # answered (the random model's few tokens may decode to nothing) while the slow endpoint still streams
        assert not slow.done() and "busy" not in local
        assert slow.result().strip() == " ".join(["slow"] * 10)
    finally:
        server.shutdown()
