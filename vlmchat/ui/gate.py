"""The door of a served app that asks for a login: every route needs it, and guessing it is throttled.

Gradio leaves some routes open even when a login is required (/openapi.json, the queue's cancel,
reset and heartbeat routes); this ASGI middleware answers 401 on every path but the login page and
its static files (PUBLIC) for a request without a valid login cookie, and sends the login page
without the API description Gradio embeds in it. /v1/ routes pass through:
the OpenAI-compatible API checks its own Bearer key, throttled by the same LoginThrottle (handed to it as
`request.state.login_throttle`). POST /login goes through the LoginThrottle, and
a file of the outputs folder is served to a login only from its own users/<name> folder (403 otherwise).
Gradio's own cache (the pictures a user uploads, the files an answer shows: chat exports, reopened
chats' pictures) is one folder for everyone, its names a secret-seeded hash of the content: a login
may read a file there only when the app named it in a response to that login (`Grants`).
Installed by `server.serve` as `app_kwargs={"middleware": [gate_middleware(settings)]}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request

from ..settings import Settings
from .throttle import LoginThrottle, wait_words
from .users import user_folder

# What the login page itself loads before anyone is logged in: the page, the form's POST, the
# front-end bundle and icons. Nothing here runs an event or reveals the app's contents.
PUBLIC_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/theme.css", "/favicon.ico", "/robots.txt",
                          "/gradio_api/startup-events"})  # launch() calls it without a login; it runs once
PUBLIC_PREFIXES = ("/assets/", "/static/")
OWN_KEY_PREFIXES = ("/v1/",)  # the OpenAI-compatible API: its own Bearer key
MAX_LOGIN_BODY = 64 * 1024
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")  # serve files of allowed_paths (the outputs folder)


def is_public(path: str) -> bool:
    """True for the paths that must answer without a login (the login page and its static files)."""
    return (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or path.startswith(OWN_KEY_PREFIXES)
            or path + "/" in OWN_KEY_PREFIXES)  # "/v1" itself: the login gate's answer, not OpenAI's 401 (tester)


def login_required(scope) -> bool:
    """Whether the Gradio app `scope["app"]` asks for a login."""
    app = scope.get("app")
    return getattr(app, "auth", None) is not None or getattr(app, "auth_dependency", None) is not None


def current_user(scope) -> str | None:
    """The user name of the login cookie the request carries, if the app gave it out."""
    app = scope.get("app")
    cookies = Request(scope).cookies
    token = cookies.get(f"access-token-{app.cookie_id}") or cookies.get(f"access-token-unsecure-{app.cookie_id}")
    return app.tokens.get(token) if token is not None else None


def others_file(path: str, user: str, outputs: Path) -> bool:
    """True when the file a /gradio_api/file= request names lies in the outputs folder but not in this login's
    own users/<name> folder: another login's, or one no login owns (what was saved before logins were on)."""
    target = Path(os.path.abspath(path))
    if not target.is_relative_to(outputs):
        return False  # Gradio's own allowed-paths check judges it
    mine = user_folder(outputs, SimpleNamespace(username=user)).name
    parts = target.relative_to(outputs).parts
    return not any(part == "users" and after == mine for part, after in zip(parts, parts[1:]))


class Grants:
    """Which files of Gradio's cache folder each login was shown: any path under the cache that a response to
    the login names (as a JSON string, a `path` or a `/file=` URL: the upload route's answer, an event's output,
    the page's config)."""

    MAX_PER_USER = 100_000

    def __init__(self, cache: Path):
        self.cache = str(Path(cache).resolve())
        self.marks = (self.cache.encode(), self.cache.replace("/", "\\/").encode())
        self.pattern = re.compile("|".join(re.escape(mark.decode()) for mark in self.marks))
        self.by_user: dict[str, dict[str, None]] = {}

    def holds(self, path: str) -> bool:
        """True when `path` lies in the cache folder."""
        return Path(os.path.abspath(path)).is_relative_to(self.cache)

    def allowed(self, user: str, path: str) -> bool:
        return os.path.abspath(path) in self.by_user.get(user, {})

    def scan(self, user: str, body: bytes) -> None:
        """Grant `user` every cache path `body` names."""
        if not any(mark in body for mark in self.marks):
            return
        from urllib.parse import unquote

        text = body.decode("utf-8", "replace")
        mine = self.by_user.setdefault(user, {})
        for start in [m.start() for m in self.pattern.finditer(text)]:
            end = start
            while end < len(text) and text[end] not in "\"'<>\n\r":  # the end of the JSON string or attribute
                end += 2 if text[end] == "\\" else 1
            raw = text[start:end]
            try:
                raw = json.loads(f'"{raw}"')
            except ValueError:
                pass
            for found in {raw, unquote(raw)}:
                mine[os.path.abspath(found)] = None
        while len(mine) > self.MAX_PER_USER:
            mine.pop(next(iter(mine)))

    def watching(self, user: str, send):
        """`send` that grants `user` what the response's JSON, event-stream or HTML bodies name."""
        state = {"scan": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers") or []).get(b"content-type", b"")
                state["scan"] = any(t in kind for t in (b"json", b"event-stream", b"html"))
            elif message["type"] == "http.response.body" and state["scan"]:
                self.scan(user, message.get("body", b""))
            await send(message)

        return watch


# Gradio's own refusal of a file input that names a path instead of an upload: it named the path it resolved
# (the app's folder, another login's upload) to whoever sent it.
NOT_UPLOADED = re.compile(r"^Cannot move .* to the gradio cache dir because it was not uploaded by a user\.$", re.S)
ERROR_EVENT = re.compile(rb'("error": ")((?:[^"\\]|\\.)*)(")')


def _errors_said(send, shown):
    """`send` whose event-stream errors are said as the app says things to others (`shown`: its folders named
    relative to them), Gradio's refusal of a file path as what to do instead."""
    state = {"events": False}

    def said(match) -> bytes:
        text = json.loads(b'"' + match.group(2) + b'"')
        text = ("A file must be uploaded to this app first (upload it; with gradio_client, pass handle_file(path)): "
                "a path on the server is never read." if NOT_UPLOADED.match(text) else shown(text))
        return match.group(1) + json.dumps(text)[1:-1].encode() + match.group(3)

    async def rewrite(message):
        if message["type"] == "http.response.start":
            state["events"] = b"event-stream" in dict(message.get("headers") or []).get(b"content-type", b"")
        elif message["type"] == "http.response.body" and state["events"] and b'"error"' in message.get("body", b""):
            message = {**message, "body": ERROR_EVENT.sub(said, message["body"])}
        await send(message)

    return rewrite


async def _send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": data})


async def _read_body(receive) -> bytes | None:
    """The whole request body, or None when it is over MAX_LOGIN_BODY."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_LOGIN_BODY:
            return None
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)
NO_API_INFO = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'


# Gradio's login form says "Incorrect Credentials" on a 400 and nothing on any other answer: a locked-out user (even
# with the right password) pressed Login and saw nothing happen. The page shows the 429's reason instead.
LOCKED_NOTE = (b'<script>(() => { const fetch0 = window.fetch; window.fetch = async (...args) => {'
               b' const answer = await fetch0(...args); const url = String((args[0] && args[0].url) || args[0]);'
               b' if (answer.status === 429 && /\/login\/?$/.test(url)) { let note ='
               b' document.getElementById("vlmchat-login-note"); if (!note) { note = document.createElement("p");'
               b' note.id = "vlmchat-login-note"; note.setAttribute("role", "alert"); note.style.cssText ='
               b' "color:#b91c1c;font-weight:600;text-align:center;margin:1em"; document.body.prepend(note); }'
               b' note.textContent = ((await answer.clone().json().catch(() => ({}))).detail) ||'
               b' "Too many failed logins; try again later."; } return answer; }; })();</script></head>')


def _login_page(send):
    """`send` for the login page: Gradio embeds the whole API description in it; the page is sent without, and
    with LOCKED_NOTE."""
    start, chunks = None, []

    async def rewrite(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = API_INFO.sub(lambda _: NO_API_INFO, b"".join(chunks)).replace(b"</head>", LOCKED_NOTE, 1)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return rewrite


class LoginGate:
    """ASGI middleware: a login for every non-public route, and a throttle on POST /login."""

    def __init__(self, app, throttle: LoginThrottle, outputs: Path, shown=lambda text: text):
        from gradio.utils import get_upload_folder

        self.app, self.throttle, self.outputs, self.shown = app, throttle, Path(outputs).resolve(), shown
        self.grants = Grants(Path(get_upload_folder()))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(OWN_KEY_PREFIXES):  # a wrong /v1 key costs as a wrong password, from the same address
            scope.setdefault("state", {})["login_throttle"] = self.throttle
        if scope["type"] == "http" and scope.get("method") == "POST" and path.rstrip("/") == "/login" \
                and getattr(scope.get("app"), "auth", None) is not None:
            return await self._login(scope, receive, send)
        if not login_required(scope):
            return await self.app(scope, receive, send)
        user = current_user(scope)
        if user is not None:
            name = next((path[len(p):] for p in FILE_ROUTES if path.startswith(p)), None)
            if name is not None and (others_file(name, user, self.outputs) or (
                    self.grants.holds(name) and not self.grants.allowed(user, name))):
                return await _send_json(send, 403, {"detail": "This file belongs to another user."})
            if scope["type"] == "http" and name is None:
                return await self.app(scope, receive, self.grants.watching(user, _errors_said(send, self.shown)))
            return await self.app(scope, receive, send)
        if path == "/" and scope["type"] == "http":
            return await self.app(scope, receive, _login_page(send))
        if is_public(path):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _send_json(send, 401, {"detail": "Not authenticated: log in first (POST /login with username and "
                                               "password, or open the app's page)."})

    async def _login(self, scope, receive, send):
        body = await _read_body(receive)
        if body is None:
            return await _send_json(send, 413, {"detail": "The login form is too large."})
        try:
            form = await Request(scope, _replay(body)).form()
        except HTTPException:  # a form Starlette cannot parse
            return await _send_json(send, 400, {"detail": "Send the login as a form with username and password."})
        user = str(form.get("username") or "").strip()
        address = (scope.get("client") or ("unknown", 0))[0]
        verdict = self.throttle.begin(address, user)
        if verdict.locked:
            when = wait_words(verdict.retry_after_s)
            return await _send_json(send, 429, {"detail": f"Too many failed logins; try again in {when}."},
                                    {"Retry-After": int(verdict.retry_after_s + 0.999)})
        if verdict.delay_s:
            await asyncio.sleep(verdict.delay_s)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, _replay(body), watch)
        if status.get("code") == 200:
            self.throttle.succeeded(address, user)
        else:
            self.throttle.failed(address, user)


def gate_middleware(settings: Settings) -> Middleware:
    """The LoginGate for a FastAPI app's `middleware=` list, throttled as [server] login_* say."""
    server = settings.server
    throttle = LoginThrottle(server.login_attempts, server.login_lockout_minutes * 60, server.login_delay_s)
    from .sharing import shown_text

    return Middleware(LoginGate, throttle=throttle, outputs=settings.paths.resolve("outputs"),
                      shown=lambda text: shown_text(settings, text))
