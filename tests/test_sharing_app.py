"""A reachable app never opens without a login; a share link that cannot be made is reported.

The apps here bind 0.0.0.0 (as `--host 0.0.0.0` does) but every request goes to 127.0.0.1.
"""

import re
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

from pathlib import Path

from conftest import ROOT, LaunchedApp
from vlmchat.ui.users import user_folder

PROTECTED = [
    ("GET", "config"), ("GET", "gradio_api/info"), ("GET", "gradio_api/openapi.json"),
    ("GET", "gradio_api/file=/etc/passwd"), ("GET", "gradio_api/queue/data?session_hash=x"),
    ("GET", "monitoring"), ("POST", "gradio_api/queue/join"), ("POST", "gradio_api/upload"),
    ("POST", "gradio_api/call/chat"), ("POST", "gradio_api/call/caption"), ("POST", "gradio_api/call/compare"),
    ("POST", "gradio_api/call/list_adapters"), ("POST", "gradio_api/call/activate_adapter"),
    ("POST", "gradio_api/run/list_adapters"),
]


TOKEN = "hf_vlmchatTestSentinelToken0123456789"


@pytest.fixture(scope="module")
def exposed_app(tmp_path_factory):
    app = LaunchedApp(tmp_path_factory.mktemp("exposed"), host="0.0.0.0", max_batch_upload_mb=1,
                      env={"HF_TOKEN": TOKEN}).wait_ready()
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


def _logged_in(app, login):
    import http.cookiejar
    import urllib.parse

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"username": login[0], "password": login[1]}).encode()
    opener.open(app.url + "login", data=form, timeout=10)
    return opener


def _get(opener, url):
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_file_routes_serve_only_the_logins_own_outputs(exposed_app):
    app, login = exposed_app
    opener = _logged_in(app, login)
    outputs = Path(app.log.name).parent / "outputs"
    own = user_folder(outputs, SimpleNamespace(username=login[0])) / "eval" / "run"
    own.mkdir(parents=True, exist_ok=True)
    (own / "result.txt").write_text("served")
    assert _get(opener, f"{app.url}gradio_api/file={own / 'result.txt'}") == (200, b"served")
    # What no login owns (the Compare votes of every login before they were per user, chats saved before
    # logins were on) is nobody's to read.
    (outputs / "compare_votes.jsonl").write_text("{}")
    (outputs / "chats" / "abc").mkdir(parents=True, exist_ok=True)
    (outputs / "chats" / "abc" / "chat.json").write_text("{}")
    for unowned in (outputs / "compare_votes.jsonl", outputs / "chats" / "abc" / "chat.json"):
        assert _get(opener, f"{app.url}gradio_api/file={unowned}")[0] == 403
    for attempt in ["/etc/passwd", "../../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                    f"{outputs}/../../../../etc/passwd", str(ROOT / "settings.toml"),
                    str(ROOT / "models" / "vlmchat-demo" / "config.json")]:
        status, body = _get(opener, f"{app.url}gradio_api/file={attempt}")
        assert status in (403, 404) and b"root:" not in body, attempt


def test_secrets_appear_nowhere_but_the_one_terminal_line(exposed_app):
    app, login = exposed_app
    password = login[1]
    opener = _logged_in(app, login)
    pages = b"".join(_get(opener, app.url + route)[1] for route in ("", "config", "gradio_api/info"))
    assert pages and password.encode() not in pages and TOKEN.encode() not in pages
    assert app.output().count(password) == 1  # the terminal line that gives it to the user
    assert TOKEN not in app.output()
    for path in Path(app.log.name).parent.rglob("*"):
        if path.is_file() and path.name != "app.log":
            content = path.read_bytes()
            assert password.encode() not in content and TOKEN.encode() not in content, path


def test_a_batch_of_uploads_over_the_limit_is_refused(exposed_app, tmp_path):
    app, login = exposed_app
    client = Client(app.url, auth=login, verbose=False)
    files = []
    for n in range(2):
        path = tmp_path / f"big{n}.png"
        path.write_bytes(b"\x89PNG" + bytes(700 * 1024))
        files.append(handle_file(str(path)))
    with pytest.raises(Exception, match="over the 1 MB limit for one batch"):
        client.predict("", files, None, "", "", "base", "txt", False, False, "auto", api_name="/caption_batch")


def test_share_link_failure_is_reported_and_the_app_keeps_serving(tmp_path, picture_files):
    app = LaunchedApp(tmp_path, "--share", "--auth", "ana:pw-for-test").wait_ready(timeout=240)
    try:
        deadline = time.monotonic() + 120  # the server answers before the tunnel attempt has failed
        while "share link could not be created" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "share link could not be created" in app.output()
        client = Client(app.url, auth=("ana", "pw-for-test"), verbose=False)
        message = {"text": "What shape is this?", "files": [handle_file(str(picture_files[("blue", "circle")]))]}
        assert client.predict(message, api_name="/chat").strip() == "circle"
    finally:
        app.stop()


def test_with_logins_the_page_says_who_is_signed_in_and_offers_log_out():
    """Nothing showed who was logged in, and there was no way to log out (tester); /logout works."""
    from vlmchat.ui.app import signed_in

    shown = signed_in(SimpleNamespace(username="<b>bob</b>"))
    assert shown["visible"] and "Signed in as <b>&lt;b&gt;bob&lt;/b&gt;</b>" in shown["value"]
    assert '<a href="logout">Log out</a>' in shown["value"]
    assert signed_in(SimpleNamespace(username=None)) == {"__type__": "update", "visible": False}


def test_a_shared_apps_job_command_names_no_server_settings_file(tmp_path):
    """/finetune_start answered `--settings /tmp/.../settings_short.toml` while the app was exposed (tester)."""
    import dataclasses

    from vlmchat.finetune.spec import JobSpec
    from vlmchat.settings import Settings
    from vlmchat.ui.finetune_tab import shown_spec

    local = dataclasses.replace(Settings(), file=str(tmp_path / "settings_short.toml"))
    shared = dataclasses.replace(local, server=dataclasses.replace(local.server, host="0.0.0.0"))
    spec = JobSpec.from_settings(local, "mine", str(tmp_path / "data"))
    assert f"--settings {tmp_path}" in shown_spec(local, spec).command()
    shown = shown_spec(shared, spec)
    assert str(tmp_path / "settings_short.toml") not in shown.command() + shown.to_json()
    assert "--settings YOUR_SETTINGS" in shown.command()
