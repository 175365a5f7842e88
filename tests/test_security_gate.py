"""The served app behind a login: every route needs it, guesses are slowed then locked out, and logged.

The app is `server.serve` itself (in this process, so the FastAPI route list can be read), bound to
127.0.0.1 with a login; every request is plain HTTP on loopback. Its lock-out lasts 3 s and its
first delay is 0.3 s so that the schedule can be measured without waiting minutes.
"""

import dataclasses
import logging
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, write_settings

LOGIN = ("ana", "pw-for-ana")
API_KEY = "sk-for-the-gate-test"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ATTEMPTS, LOCKOUT_S, DELAY_S = 3, 3.0, 0.3
# The only routes that answer without a login: the login page, its form, its static files, and
# the startup hook Gradio's own launch() calls once. Everything else must say 401.
PUBLIC = {"/", "/login", "/login/", "/logout", "/theme.css", "/favicon.ico", "/robots.txt", "/assets/{path:path}",
          "/static/{path:path}", "/gradio_api/startup-events"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from vlmchat.settings import load_settings
    from vlmchat.ui.server import serve

    folder = tmp_path_factory.mktemp("gate")
    settings = load_settings(write_settings(folder, auth=":".join(LOGIN), port=free_port(),
                                            login_attempts=ATTEMPTS, login_lockout_minutes=LOCKOUT_S / 60,
                                            login_delay_s=DELAY_S))
    settings = dataclasses.replace(settings, api=dataclasses.replace(settings.api, key=API_KEY))
    app = serve(settings, block=False)
    yield app, f"http://127.0.0.1:{settings.server.port}"
    app.close()


def _routes(routes):
    """(methods, path) of every route of a FastAPI app, included routers flattened."""
    for route in routes:
        if hasattr(route, "effective_candidates"):  # FastAPI's included router
            yield from ((getattr(c.original_route, "methods", None) or {"GET"}, c.path)
                        for c in route.effective_candidates())
        else:
            yield getattr(route, "methods", None) or {"GET"}, route.path


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_but_the_login_page_needs_a_login(served):
    app, url = served
    found_public, checked = set(), 0
    for methods, path in _routes(app.app.routes):
        if path == "/v1" or path.startswith("/v1/"):
            continue  # the OpenAI-compatible API checks its own Bearer key (tests/test_openai_api.py)
        for method in sorted(methods):
            answer = httpx.request(method, url + _concrete(path), json={} if method == "POST" else None, timeout=10)
            if path in PUBLIC:
                found_public.add(path)
                continue
            checked += 1
            assert answer.status_code in (401, 403), (method, path, answer.status_code, answer.text[:200])
    assert found_public == PUBLIC and checked > 60
    for method, path in [("GET", "/openapi.json"), ("POST", "/gradio_api/cancel"), ("POST", "/gradio_api/reset"),
                         ("GET", "/gradio_api/heartbeat/x"), ("GET", "/config"), ("GET", "/gradio_api/info")]:
        assert httpx.request(method, url + path, timeout=10).status_code == 401, path  # the list


def test_the_login_page_reveals_no_endpoint(served):
    _, url = served
    page = httpx.get(url + "/", timeout=10)
    assert page.status_code == 200 and "caption_batch" not in page.text and "preview_model" not in page.text


def test_with_the_login_the_routes_answer(served):
    _, url = served
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/login", data=dict(zip(("username", "password"), LOGIN))).status_code == 200
        assert client.get("/gradio_api/info").status_code == 200
        assert client.get("/config").status_code == 200


@pytest.fixture
def login_page(served):
    """A fresh Chromium page on the app's login page."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    _, url = served
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                             "--disable-background-networking"])
        page = browser.new_page()
        yield page
        browser.close()


def _log_in(page, password: str) -> None:
    page.locator("input").first.fill(LOGIN[0])
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()


@pytest.mark.slow
def test_a_browser_logs_in_through_the_gate(served, login_page):
    page, (_, url) = login_page, served
    refused = []
    page.on("response", lambda r: r.status >= 400 and refused.append((r.status, r.url)))
    page.goto(url + "/")
    _log_in(page, LOGIN[1])
    page.wait_for_selector("textarea", timeout=60_000)
    assert page.get_by_role("tab", name="Caption").count() == 1 and refused == []


@pytest.mark.slow
def test_a_locked_out_browser_user_is_told_why_and_for_how_long(served, login_page):
    """Gradio's form shows "Incorrect Credentials" on a 400 and nothing on a 429: a user locked out (even with the
    right password) pressed Login and nothing happened."""
    page, (_, url) = login_page, served
    page.goto(url + "/")
    for password in [f"wrong-{n}" for n in range(ATTEMPTS)] + [LOGIN[1]]:
        with page.expect_response(lambda r: r.url.rstrip("/").endswith("/login")) as answered:
            _log_in(page, password)
    assert answered.value.status == 429
    note = page.get_by_role("alert").filter(has_text="Too many failed logins")
    note.wait_for(timeout=10_000)
    assert re.fullmatch(r"Too many failed logins; try again in \d+ seconds\.", note.inner_text())
    time.sleep(LOCKOUT_S + 0.2)  # the next test starts unlocked


# Tests that, when they pass, end with a login let in after their lock-out was served: nothing counted is left.
LEAVE_NOTHING = {"test_guesses_are_slowed_then_locked_out_then_let_in_again",
                 "test_parallel_guesses_cannot_outrun_the_count",
                 "test_wrong_api_keys_are_slowed_then_locked_out_and_logged"}
_previous = {"name": None, "failed": True}  # the test run just before, here


@pytest.fixture(autouse=True)
def _remember_the_previous_test(request):
    failed_before = request.session.testsfailed
    yield
    _previous.update(name=request.node.originalname, failed=request.session.testsfailed > failed_before)


def _wait_out_what_an_earlier_test_left() -> None:
    """A lock-out or failures still counted (they are forgotten LOCKOUT_S after the last): waited out, unless the test
    just before was one that passed and leaves nothing."""
    if _previous["name"] in LEAVE_NOTHING and not _previous["failed"]:
        return
    time.sleep(LOCKOUT_S + 0.2)


def _attempt(url, password, user=LOGIN[0]):
    start = time.monotonic()
    answer = httpx.post(url + "/login", data={"username": user, "password": password}, timeout=120)
    return answer, time.monotonic() - start


@pytest.mark.slow
def test_guesses_are_slowed_then_locked_out_then_let_in_again(served, caplog):
    _, url = served
    caplog.set_level(logging.WARNING, logger="vlmchat.login")
    waits = []
    for n in range(ATTEMPTS):
        answer, took = _attempt(url, f"guess-{n}")
        assert answer.status_code == 400
        waits.append(took)
    expected = [0.0] + [DELAY_S * 2 ** k for k in range(ATTEMPTS - 1)]
    for took, wanted in zip(waits, expected):
        assert wanted <= took < wanted + 0.5, (waits, expected)
    locked, took = _attempt(url, LOGIN[1])  # even the right password: the address is locked out
    assert locked.status_code == 429 and took < 0.5
    assert 1 <= int(locked.headers["retry-after"]) <= LOCKOUT_S + 1
    assert "Too many failed logins; try again in" in locked.json()["detail"]
    other_user, _ = _attempt(url, "x", user="bob")
    assert other_user.status_code == 429  # per address, whatever the user name
    forwarded = httpx.post(url + "/login", data={"username": "bob", "password": "x"}, timeout=120,
                           headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 429  # a header cannot name another address (it did, from 127.0.0.1)
    time.sleep(LOCKOUT_S + 0.2)
    answer, took = _attempt(url, LOGIN[1])
    assert answer.status_code == 200 and took < 0.5  # not locked out forever, and no delay left over
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed login")]
    assert len(failures) == ATTEMPTS and all("127.0.0.1" in m and re.search(r"\d{4}-\d\d-\d\dT", m) for m in failures)
    assert any("locked out" in r.getMessage() for r in caplog.records)
    assert not any("guess-" in r.getMessage() or LOGIN[1] in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_parallel_guesses_cannot_outrun_the_count(served):
    import concurrent.futures

    _, url = served
    _wait_out_what_an_earlier_test_left()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda n: _attempt(url, f"parallel-{n}")[0].status_code, range(12)))
    assert answers.count(400) == ATTEMPTS and answers.count(429) == 12 - ATTEMPTS
    time.sleep(LOCKOUT_S + 0.2)
    assert _attempt(url, LOGIN[1])[0].status_code == 200


@pytest.mark.slow
def test_wrong_api_keys_are_slowed_then_locked_out_and_logged(served, caplog):
    """30 wrong /v1 keys took under a second, and none was logged."""
    _, url = served
    _wait_out_what_an_earlier_test_left()
    caplog.set_level(logging.WARNING, logger="vlmchat.login")

    def models(key):
        start = time.monotonic()
        answer = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        return answer, time.monotonic() - start

    wrong = [models(f"wrong-{n}") for n in range(ATTEMPTS)]
    assert [answer.status_code for answer, _ in wrong] == [401] * ATTEMPTS
    assert wrong[-1][1] >= DELAY_S * 2 ** (ATTEMPTS - 2)  # the delay doubles as for passwords
    locked, _ = models(API_KEY)  # even the right key: the address is locked out
    assert locked.status_code == 429 and 1 <= int(locked.headers["retry-after"]) <= LOCKOUT_S + 1
    assert set(locked.json()["error"]) == {"message", "type", "param", "code"}
    assert "try again in" in locked.json()["error"]["message"]
    failures = [r.getMessage() for r in caplog.records if "API key" in r.getMessage()]
    assert len(failures) == ATTEMPTS and all("127.0.0.1" in m and "wrong-" not in m for m in failures)
    time.sleep(LOCKOUT_S + 0.2)
    assert models(API_KEY)[0].status_code == 200


def test_a_malformed_login_form_gets_an_answer_not_a_crash(served):
    _, url = served
    _wait_out_what_an_earlier_test_left()
    form = "application/x-www-form-urlencoded"
    for body, kind in [(b"--x\r\ngarbage", "multipart/form-data; boundary=x"), (b"\xff\xfe", form),
                       (b"a" * 100_000, form)]:
        answer = httpx.post(url + "/login", content=body, headers={"content-type": kind}, timeout=30)
        assert 400 <= answer.status_code < 500, (kind, answer.status_code, answer.text[:200])
