"""A reachable app never opens without a login; a share link that cannot be made is reported.

The apps here bind 0.0.0.0 (as `--host 0.0.0.0` does) but every request goes to 127.0.0.1.
"""

import re
import urllib.error
import urllib.request

import pytest
from gradio_client import Client, handle_file

from conftest import LaunchedApp

PROTECTED = [
    ("GET", "config"), ("GET", "gradio_api/info"), ("GET", "gradio_api/openapi.json"),
    ("GET", "gradio_api/file=/etc/passwd"), ("GET", "gradio_api/queue/data?session_hash=x"),
    ("GET", "monitoring"), ("POST", "gradio_api/queue/join"), ("POST", "gradio_api/upload"),
    ("POST", "gradio_api/call/chat"), ("POST", "gradio_api/call/caption"), ("POST", "gradio_api/call/compare"),
    ("POST", "gradio_api/call/list_adapters"), ("POST", "gradio_api/call/activate_adapter"),
    ("POST", "gradio_api/run/list_adapters"),
]


@pytest.fixture(scope="module")
def exposed_app(tmp_path_factory):
    app = LaunchedApp(tmp_path_factory.mktemp("exposed"), host="0.0.0.0").wait_ready()
    match = re.search(r"User: (\S+)  Password: (\S+)", app.output())
    assert match, app.output()
    yield app, (match.group(1), match.group(2))
    app.stop()


def _status(url, method):
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("method, route", PROTECTED)
def test_every_route_that_runs_or_reveals_needs_a_login(exposed_app, method, route):
    app, _ = exposed_app
    assert _status(app.url + route, method) in (401, 403)


def test_without_the_password_the_client_is_refused(exposed_app):
    app, (user, _) = exposed_app
    with pytest.raises(Exception):
        Client(app.url, auth=(user, "wrong-password"), verbose=False)
    with pytest.raises(Exception):
        Client(app.url, verbose=False).predict(api_name="/list_adapters")


def test_with_the_generated_password_it_works(exposed_app, picture_files):
    app, login = exposed_app
    client = Client(app.url, auth=login, verbose=False)
    message = {"text": "Describe the image.", "files": [handle_file(str(picture_files[("red", "square")]))]}
    assert client.predict(message, api_name="/chat").strip() == "a red square"


def test_the_password_is_shown_once_and_written_nowhere(exposed_app, tmp_path_factory):
    app, (_, password) = exposed_app
    assert app.output().count(password) == 1  # the terminal line that gives it to the user
    folder = app.log.name.rsplit("/", 1)[0]
    import pathlib

    for path in pathlib.Path(folder).rglob("*"):
        if path.is_file() and path.name != "app.log":
            assert password.encode() not in path.read_bytes(), path


def test_share_link_failure_is_reported_and_the_app_keeps_serving(tmp_path, picture_files):
    app = LaunchedApp(tmp_path, "--share", "--auth", "ana:pw-for-test").wait_ready(timeout=240)
    try:
        assert "share link could not be created" in app.output()
        client = Client(app.url, auth=("ana", "pw-for-test"), verbose=False)
        message = {"text": "What shape is this?", "files": [handle_file(str(picture_files[("blue", "circle")]))]}
        assert client.predict(message, api_name="/chat").strip() == "circle"
    finally:
        app.stop()
