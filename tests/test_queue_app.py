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
    message = {"text": "Describe the image.", "files": [handle_file(str(picture_files[("red", "circle")]))]}
    long_jobs = []
    for _ in range(2):  # one runs, one waits
        job = Client(slow_app.url, verbose=False).submit(message, 3000, api_name="/chat")
        long_jobs.append(job)
        time.sleep(1.5)
    try:
        with pytest.raises(Exception, match="(?i)queue is full"):
            Client(slow_app.url, verbose=False).predict(message, 5, api_name="/chat")
    finally:
        for job in long_jobs:
            job.cancel()
