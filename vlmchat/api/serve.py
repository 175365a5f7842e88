"""OpenAI's chat API under /v1, served by the UI's own process, model manager and batcher.

`GET /v1/models` lists the loaded base model and every adapter in the adapters folder that fits
it; `POST /v1/chat/completions` answers with any of them (`model` per request), with text and
`image_url` parts (data: URLs; http(s) only when api.allow_remote_images), streamed (SSE) or
not. Requests are stateless. Every request goes through the manager's dynamic batcher: requests
that arrive together on the same model and parameters share one generation, each streamed row
sent to its own client as it grows. Errors use OpenAI's shape
{"error": {"message", "type", "param", "code"}} with the status a client expects (400, 401, 404,
429, 500). Whenever the app requires a login, every /v1 request needs `Authorization: Bearer KEY`; a wrong key
counts as a failed login from its address (the login gate's throttle: a delay, then 429 with Retry-After).

`build_api` returns a FastAPI app that `vlmchat.ui.server` mounts at /v1 of Gradio's own app.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import ContextLengthError, FieldError, InputError, NoModelError, VlmchatError
from ..images import is_data_url, load_image
from ..lora.runtime import BASE, is_base
from ..lora.store import adapter_path, usable_adapter
from ..models.conversation import for_local_model
from ..models.families import IMAGE_DETAILS
from ..models.manager import Answer, GenerationParams, ModelManager, is_endpoint
from ..settings import Settings
from ..models.batcher import BusyError, Ticket
from ..ui.throttle import wait_words

KEY_VARIABLE = "VLMCHAT_API_KEY"


@dataclass(frozen=True)
class ApiKey:
    """The Bearer key /v1 requires (None: no login is required, so neither is a key) and whether we made it up."""

    value: str | None = None
    generated: bool = False


def resolve_api_key(settings: Settings, login_required: bool) -> ApiKey:
    """The key: api.key in settings, else $VLMCHAT_API_KEY, else a generated one (shown once by the caller)."""
    if not login_required:
        return ApiKey()
    given = settings.api.key or os.environ.get(KEY_VARIABLE, "")
    return ApiKey(given, False) if given else ApiKey("sk-vlmchat-" + secrets.token_urlsafe(24), True)


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        """{"error": {...}} as OpenAI writes it."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _api_error(exc: BaseException) -> ApiError:
    """The ApiError for anything a request may raise."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BusyError):
        return ApiError(429, str(exc), "rate_limit_error", code="queue_full")
    if isinstance(exc, NoModelError):
        return ApiError(503, str(exc), "server_error", code="no_model")
    if isinstance(exc, ContextLengthError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, VlmchatError):
        return ApiError(400, str(exc))
    traceback.print_exception(exc)  # the message sends whoever runs the server to its terminal: it must be there
    return ApiError(500, f"The server failed while answering ({type(exc).__name__}); see its terminal.", "server_error")


# ---- the request -------------------------------------------------------------------------------------


# Strict, as OpenAI's API is: "max_tokens": "5" or "stream": "yes" is a 400 naming the field, not read as 5 or true.
STRICT = ConfigDict(extra="ignore", strict=True)


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool | None = False  # OpenAI: 'boolean or null', as the other optional fields


class ChatMessage(BaseModel):
    model_config = STRICT
    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None  # the older form of tool_calls

    @field_validator("tool_calls", "function_call")
    @classmethod
    def _no_tool_calls(cls, calls, info):
        if calls:  # the other half of a tool history: refused as the tool results are, not read as an empty turn
            raise ValueError(f"a message with {info.field_name} is part of a tool history, and tools are not "
                             "supported here: the local model answers in text only; leave tool calls and their "
                             "results out of the history")
        return calls

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role in ("tool", "function"):  # an agent's history with tool calls: say why, not only which roles
            raise ValueError(f"a '{role}' message is a tool result, and tools are not supported here: the local "
                             "model answers in text only; leave tool calls and their results out of the history")
        if role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"role '{role}' is not one of system, developer, user, assistant")
        return role


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that vlmchat uses (others are ignored)."""

    model_config = STRICT
    model: str
    messages: list[ChatMessage]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = 1
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None


UNION_MEMBERS = {"str", "int", "float", "bool", "none"}


def _param(loc) -> str:
    """A pydantic error location as OpenAI names a field ("messages[0].content"), without pydantic's names of the
    union members tried ("str", "list[dict[str,any]]")."""
    fields = [p for p in loc if isinstance(p, int) or not (p in UNION_MEMBERS or "[" in p)]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in fields).lstrip(".")


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    param = _param(errors[0].get("loc", ()))
    # a union field's one error per member tried: "should be a valid string or a valid list"
    said = [str(e.get("msg", "")).removeprefix("Value error, ") for e in errors if _param(e.get("loc", ())) == param]
    message = " or ".join([said[0]] + [m.removeprefix("Input should be ") for m in said[1:]])
    return ApiError(400, f"Invalid request: {param or 'body'}: {message}.", param=param or None)


def parse_request(body: bytes) -> ChatRequest:
    """The request from its JSON body, or a 400 ApiError naming the wrong field."""
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        if exc.errors()[0].get("type") == "json_invalid":
            raise ApiError(400, "The request body is not valid JSON.") from None
        raise _validation_error(exc) from None


def generation_params(request: ChatRequest, settings: Settings) -> GenerationParams:
    """GenerationParams from the request, the settings' [generation] defaults for what it leaves out."""
    if request.n not in (None, 1):
        raise ApiError(400, "Only n = 1 is supported; send several requests for several answers.", param="n")
    if request.tools:
        raise ApiError(400, "tools are not supported here: the local model answers in text only; leave tools out.",
                       param="tools")
    if request.response_format and request.response_format.get("type", "text") != "text":
        raise ApiError(400, f"response_format {request.response_format.get('type')!r} is not supported here: the "
                            "answer is not constrained to JSON; ask for JSON in the message instead.",
                       param="response_format")
    if request.logprobs or request.top_logprobs:
        field = "logprobs" if request.logprobs else "top_logprobs"
        raise ApiError(400, f"{field}: log-probabilities are not returned by this server; leave it out.", param=field)
    # function_call "none" is OpenAI's default where no functions are given: nothing asked
    if request.functions or request.function_call not in (None, "none"):
        field = "functions" if request.functions else "function_call"
        raise ApiError(400, f"{field} is not supported here: the local model answers in text only; leave it out.",
                       param=field)
    if request.audio or set(request.modalities or ()) - {"text"}:  # an answer asked for in audio would have none
        raise ApiError(400, "Audio answers are not made here: the local model answers in text; leave out audio and "
                            "modalities other than text.", param="audio" if request.audio else "modalities")
    if request.web_search_options is not None:  # an answer the client would take as searched on the web
        raise ApiError(400, "web_search_options: this server does not search the web; the local model answers from "
                            "the messages alone; leave it out.", param="web_search_options")
    if request.logit_bias:
        raise ApiError(400, "logit_bias is not applied by this server; leave it out (a banned token would still "
                            "be answered).", param="logit_bias")
    for field in ("presence_penalty", "frequency_penalty"):  # 0 is OpenAI's default: nothing asked
        if getattr(request, field):
            raise ApiError(400, f"{field} is not applied by this server; leave it out or send 0.", param=field)
    if request.stream_options is not None and not request.stream:
        raise ApiError(400, "stream_options is only for stream = true.", param="stream_options")
    gen = settings.generation
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    tokens = next(((name, value) for name, value in (("max_completion_tokens", request.max_completion_tokens),
                                                     ("max_tokens", request.max_tokens)) if value is not None),
                  ("max_tokens", gen.max_new_tokens))
    names = {"max_new_tokens": tokens[0], "temperature": "temperature", "top_p": "top_p", "stop_strings": "stop",
             "seed": "seed"}
    try:
        return GenerationParams(
            max_new_tokens=tokens[1],
            temperature=gen.temperature if request.temperature is None else request.temperature,
            top_p=gen.top_p if request.top_p is None else request.top_p,
            seed=gen.seed if request.seed is None else request.seed, stop_strings=tuple(stops),
            image_detail=_requested_detail(request))
    except FieldError as exc:
        param = names.get(exc.field)
        raise ApiError(400, f"Invalid {param}: {exc}" if param else str(exc), param=param) from None
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


def _image(url: str, param: str, settings: Settings):
    """The PIL image an image_url part points at; 400 for a bad image or a refused URL."""
    limit = settings.server.max_upload_mb * 2**20
    source = url
    if not is_data_url(url):
        if not url.lower().startswith(("http://", "https://")):
            raise ApiError(400, f"{param} must be a data: URL (data:image/png;base64,...).", param=param,
                           code="invalid_image_url")
        if not settings.api.allow_remote_images:
            raise ApiError(400, f"{param}: this server does not fetch http(s) image URLs (fetching them from the "
                                "server is an SSRF risk); send the image as a data: URL, or set "
                                "api.allow_remote_images = true in settings.toml.", param=param,
                           code="remote_images_disabled")
        if settings.server.exposed:
            _refuse_inside(url, param)
        source = _fetch(url, param, limit)
    try:  # fetched or sent, what is not a picture is the same mistake (a fetched page was param "messages")
        return load_image(source, name=param, max_bytes=limit)
    except InputError as exc:
        if is_data_url(url) and len(url) * 3 // 4 > limit:  # load_image's advice for that is to name a file by path
            raise ApiError(400, f"{param} holds about {len(url) * 3 / 4 / 2**20:.1f} MB, over the {limit / 2**20:g} MB "
                                "limit for a picture (server.max_upload_mb); send a smaller picture: scaled down, or "
                                "as a JPEG.", param=param, code="invalid_image") from None
        raise ApiError(400, str(exc), param=param, code="invalid_image") from None


def _refuse_inside(url: str, param: str) -> None:
    """A 400 unless every address of the URL's host is a public one: an app others reach fetched this machine's and
    its network's addresses for them, and said open, closed and redirecting ports apart (shared-app reviewer)."""
    import ipaddress
    import socket
    import urllib.parse

    refused = ApiError(400, f"{param}: this server fetches images only from public internet addresses; send the "
                            "image as a data: URL.", param=param, code="invalid_image_url")
    try:
        parts = urllib.parse.urlsplit(url)
        found = socket.getaddrinfo(parts.hostname or "", parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        raise refused from None
    if not all(ipaddress.ip_address(info[4][0].split("%")[0]).is_global for info in found):
        raise refused


FETCH_SECONDS = 20  # for the whole download of a remote image


def _fetch(url: str, param: str, limit: int) -> bytes:
    """The bytes at an http(s) URL (no redirects, at most `limit`), for api.allow_remote_images."""
    import httpx

    deadline = time.monotonic() + FETCH_SECONDS  # in all: a host sending a byte a second held a queue slot for ever
    try:
        with httpx.stream("GET", url, timeout=FETCH_SECONDS, follow_redirects=False) as response:
            if response.is_redirect:
                raise ApiError(400, f"{param} redirects to {response.headers.get('location', 'another address')}, and "
                                    "redirects are not followed: send the final URL, or the image as a data: URL.",
                               param=param, code="invalid_image_url")
            if response.status_code >= 400:
                raise ApiError(400, f"{param} could not be fetched: its server answered {response.status_code} "
                                    f"{response.reason_phrase}.", param=param, code="invalid_image_url")
            data = b""
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > limit:
                    raise ApiError(400, f"{param} is over the {limit // 2**20} MB image limit.", param=param)
                if time.monotonic() > deadline:
                    raise ApiError(400, f"{param} took over {FETCH_SECONDS} s to download; send the image as a data: "
                                        "URL.", param=param, code="invalid_image_url")
            return data
    except httpx.HTTPError as exc:
        raise ApiError(400, f"{param} could not be fetched ({type(exc).__name__}: {exc}).", param=param,
                       code="invalid_image_url") from None


def _requested_detail(request: ChatRequest) -> str:
    """The highest image_url.detail asked for in the request ("" when none): one detail per answer; a 400 naming
    the part whose detail is not one of OpenAI's (low, high, auto)."""
    asked = set()
    for m, message in enumerate(request.messages):
        for p, part in enumerate(message.content if isinstance(message.content, list) else ()):
            url = part.get("image_url") if isinstance(part, dict) else None
            detail = url.get("detail") if isinstance(url, dict) else None
            if detail is not None and detail not in IMAGE_DETAILS:
                param = f"messages[{m}].content[{p}].image_url.detail"
                raise ApiError(400, f"{param} must be low, high or auto (got {detail!r}).", param=param)
            asked.add(detail)
    return next((level for level in ("high", "auto", "low") if level in asked), "")


def to_conversation(request: ChatRequest, settings: Settings) -> list[dict]:
    """The request's messages as processor messages (images decoded); system/developer become system."""
    conversation = []
    for m, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        content = message.content
        if isinstance(content, list):
            content = [_part(part, f"messages[{m}].content[{p}]", settings) for p, part in enumerate(content)]
            if role != "user" and any(part["type"] == "image" for part in content):  # as OpenAI refuses them
                raise ApiError(400, f"messages[{m}]: image_url parts are for user messages only (this one is "
                                    f"'{message.role}'); send the picture in a user message.", param=f"messages[{m}]")
        conversation.append({"role": role, "content": content or ""})
    if not conversation:
        raise ApiError(400, "messages must hold at least one message.", param="messages")
    return conversation


def _part(part: dict, param: str, settings: Settings) -> dict:
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ApiError(400, f"{param}.text must be a string (a text part is {{\"type\": \"text\", \"text\": "
                                "\"...\"}).", param=f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str):
            raise ApiError(400, f"{param}.image_url.url is missing.", param=f"{param}.image_url")
        return {"type": "image", "image": _image(url, f"{param}.image_url", settings)}
    if kind is None:
        raise ApiError(400, f"{param} has no 'type'; give each content part a type: 'text' or 'image_url'.",
                       param=f"{param}.type")
    raise ApiError(400, f"{param}: content parts of type {kind!r} are not supported; use text and image_url.",
                   param=f"{param}.type")


# ---- the answers -------------------------------------------------------------------------------------


def served_models(manager: ModelManager) -> list[str]:
    """What /v1/models lists: the base model's id, then the adapters that fit it (endpoints are not served); during a
    Load, what it loads (a client does not retry the 404 model_not_found its model would be meanwhile)."""
    manager.wait_for_load()
    if manager.info is None:
        return []
    return [manager.info.shown] + [name for name in manager.model_choices()[1:] if not is_endpoint(name)]


def _adapter_folder(manager: ModelManager, name: str) -> bool:
    """True when the adapters folder holds an adapter folder called `name` (a valid adapter name)."""
    try:
        return adapter_path(manager.settings.paths.resolve("adapters"), name).is_dir()
    except VlmchatError:
        return False


def pick_model(manager: ModelManager, name: str) -> str | None:
    """The adapter to answer with (None = base) for the request's `model`, attached if needed; 404 if unknown."""
    if not name.strip():
        raise ApiError(400, "model is empty; name one of those GET /v1/models lists (or 'base').", param="model")
    manager.wait_for_load()
    if manager.info is not None and (is_base(name) or name in (manager.info.model_id, manager.info.shown)):
        return None
    if name not in served_models(manager):
        listed = f"GET /v1/models lists {', '.join(served_models(manager)) or 'none (no model is loaded)'}."
        if manager.info is not None and _adapter_folder(manager, name):  # there, but for another base model
            try:
                usable_adapter(manager.settings.paths.resolve("adapters"), name, manager.info.model_id,
                               manager.info.source, manager.info.architecture)
            except VlmchatError as exc:  # "... the loaded model is X": X as /v1/models names it
                said = str(exc).replace(manager.info.model_id, manager.info.shown)
                raise ApiError(404, f"{said} {listed}", param="model", code="model_not_found") from None
        raise ApiError(404, f"The model '{name}' does not exist here; {listed}", param="model", code="model_not_found")
    manager.attach_named_adapter(name)
    return name


def _answering(manager: ModelManager, adapter: str | None) -> str:
    """The `model` a reply names: the adapter, or the base model's id (also when it was asked for as 'base'), as
    OpenAI names the model that answered."""
    return adapter or (manager.info.shown if manager.info else BASE)


def _usage(answer: Answer) -> dict:
    prompt, completion = answer.prompt_tokens or 0, answer.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(answer: Answer, model: str, ident: str) -> dict:
    """A chat.completion object."""
    return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason, "logprobs": None}],
            "usage": _usage(answer)}


def _chunk(head: dict, delta: dict, finish: str | None = None, usage: dict | None = None,
           choices: bool = True, with_usage: bool = False) -> str:
    """One chat.completion.chunk event after the stream's `head` (its id, object, created and model, the same in
    every chunk as OpenAI sends them); `with_usage`: the request asked for usage, so every chunk has the field
    (null until the last one's counts, as OpenAI documents stream_options.include_usage)."""
    body = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            if choices else []}
    if usage is not None or with_usage:
        body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def stream_events(answers: Iterator[Answer], model: str, ident: str, include_usage: bool) -> Iterator[str]:
    """Server-sent events from growing Answers: role, content deltas, finish, usage (if asked), [DONE]."""
    head = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    yield _chunk(head, {"role": "assistant", "content": ""}, with_usage=include_usage)
    sent, last = "", None
    try:
        for last in answers:
            if last.text.startswith(sent) and len(last.text) > len(sent):
                yield _chunk(head, {"content": last.text[len(sent):]}, with_usage=include_usage)
                sent = last.text
    except Exception as exc:  # noqa: BLE001 - after the 200 an error can only travel as an event
        yield f"data: {json.dumps(_api_error(exc).body())}\n\n"
        return
    yield _chunk(head, {}, finish=last.finish_reason if last else "stop", with_usage=include_usage)
    if include_usage and last is not None:
        yield _chunk(head, {}, usage=_usage(last), choices=False)
    yield "data: [DONE]\n\n"


# ---- the app -----------------------------------------------------------------------------------------


def _error_response(error: ApiError, retry_after_s: float = 1.0):
    # OpenAI's client waits as long as Retry-After says before it retries a 429 (and retries it by itself)
    retry = str(math.ceil(retry_after_s))
    headers = {401: {"WWW-Authenticate": "Bearer"}, 429: {"Retry-After": retry}}.get(error.status)
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _locked_out(retry_after_s: float):
    """The 429 for an address locked out by wrong keys or passwords (the login's throttle)."""
    when = wait_words(retry_after_s)
    return _error_response(ApiError(429, f"Too many wrong API keys or logins from this address; try again in {when}.",
                                    "rate_limit_error", code="too_many_failed_attempts"), retry_after_s)


def _authorized(header: str, key: ApiKey) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), key.value.encode())


def build_api(manager: ModelManager, settings: Settings, key: ApiKey):
    """The FastAPI app to mount at /v1: every route behind the Bearer key when one is set."""
    api = FastAPI(title="vlmchat OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)

    @api.middleware("http")
    async def bearer(request: Request, call_next):
        if key.value is None:
            return await call_next(request)
        header = request.headers.get("authorization", "")
        throttle = getattr(request.state, "login_throttle", None)  # the login gate's; none outside a served app
        address = request.client.host if request.client else "unknown"
        if _authorized(header, key):  # locked out too, else guesses would go on with the right one answered 200
            wait = throttle.retry_after(address) if throttle is not None else 0.0
            return _locked_out(wait) if wait else await call_next(request)
        if throttle is not None and header.strip():  # a key sent is a guess; none sent is a forgotten key
            verdict = throttle.begin(address, None)
            if verdict.locked:
                return _locked_out(verdict.retry_after_s)
            await asyncio.sleep(verdict.delay_s)
            throttle.failed(address, None)
        said = ("The API key sent is not this server's" if header.strip() else "This server requires an API key")
        return _error_response(ApiError(401, f"{said}: send 'Authorization: Bearer KEY' (api_key= in the openai "
                                             "client); the key is api.key in settings.toml, "
                                             f"${KEY_VARIABLE}, or the one printed at start.", code="invalid_api_key"))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; "
                                                         "vlmchat serves GET /v1/models and POST /v1/chat/completions.",
                                        code="not_found" if exc.status_code == 404 else None))

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error_response(ApiError(400, f"Invalid request: {exc.errors()[0].get('msg')}."))

    created = int(time.time())  # one time for the API's life: a tool that caches the list sees no change

    def model_object(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "vlmchat"}

    @api.get("/models")
    def list_models():
        return {"object": "list", "data": [model_object(name) for name in served_models(manager)]}

    @api.get("/models/{name:path}")
    def get_model(name: str):
        served = served_models(manager)
        if manager.info is not None and is_base(name) and name:  # 'base' answers in chat, so it is a model here
            return model_object(manager.info.shown)
        if name not in served:
            return _error_response(ApiError(404, f"The model '{name}' does not exist here.", param="model",
                                            code="model_not_found"))
        return model_object(name)

    @api.post("/chat/completions")
    async def chat_completions(http: Request):
        try:  # admitted on arrival, so a batch forming now waits for this request while it is read
            ticket = manager.batcher.admit(coming=True)
        except BusyError as exc:
            return _error_response(_api_error(exc))
        try:
            body = await _read_body(http, request_limit(settings))
        except ApiError as exc:
            ticket.release()
            return _error_response(exc)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer, nothing to log
            ticket.release()
            return Response(status_code=400)
        except BaseException:
            ticket.release()
            raise
        # the model work runs off the event loop
        return await run_in_threadpool(answer_request, manager, settings, body, ticket)

    return api


def answer_request(manager: ModelManager, settings: Settings, body: bytes, ticket: Ticket):
    """The response to one chat completion request: a chat.completion, an SSE stream or an error."""
    ident, streaming = "chatcmpl-" + secrets.token_hex(12), False
    try:
        request = parse_request(body)
        adapter = pick_model(manager, request.model)
        params = generation_params(request, settings)
        try:
            conversation = for_local_model(manager, to_conversation(request, settings), "add an image_url part")
        except InputError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if not request.stream:
            return completion_body(manager.answer(conversation, params, adapter, ticket), _answering(manager, adapter),
                                   ident)
        events = _admitted_stream(manager, conversation, params, adapter, request, ident, ticket)
        first = next(events)  # a bad adapter or a refused conversation still gets its status
        streaming = True
    except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
        return _error_response(_api_error(exc))
    finally:
        if not streaming:
            ticket.release()
    return StreamingResponse(_chain(first, events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


API_PICTURES = 4  # a /v1 request may be as large as this many pictures of server.max_upload_mb


def request_limit(settings: Settings) -> int:
    """Bytes a /v1 request may have: API_PICTURES pictures at the picture limit (base64 makes that about 3),
    never more than any upload (server.max_batch_upload_mb). Each request in the queue may hold this much."""
    return min(API_PICTURES * settings.server.max_upload_mb, settings.server.max_batch_upload_mb) * 2**20


async def _read_body(http: Request, limit: int) -> bytes:
    """The request body, or a 413 ApiError as soon as it passes `limit` bytes: from its Content-Length before
    anything is read, else while it arrives (it is never held whole)."""
    too_large = ApiError(413, f"The request is over {limit / 2**20:g} MB ({API_PICTURES} x server.max_upload_mb, "
                              "the size of a picture, at most server.max_batch_upload_mb); send fewer or smaller "
                              "images.", code="request_too_large")
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _admitted_stream(manager: ModelManager, conversation: list[dict], params: GenerationParams, adapter: str | None,
                     request: ChatRequest, ident: str, ticket: Ticket) -> Iterator[str]:
    """The SSE events of a streamed answer, its ticket held (counted in the queue) until the stream ends; the
    first event comes only after the first token, so anything that fails before it is raised to the caller."""
    with ticket:
        answers = manager.stream_answer(conversation, params, adapter=adapter, ticket=ticket)
        first = next(answers)
        include = bool(request.stream_options and request.stream_options.include_usage)
        yield from stream_events(_chain(first, answers), _answering(manager, adapter), ident, include)


def _chain(first, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def api_routes(manager: ModelManager, settings: Settings, login_required: bool) -> list:
    """The route that mounts /v1 on Gradio's app (launch's app_kwargs "routes"); a generated key is printed
    once, on the terminal only."""
    from starlette.routing import Mount

    key = resolve_api_key(settings, login_required)
    if key.generated:
        print(f"vlmchat: the OpenAI-compatible API at /v1 needs a key. Authorization: Bearer {key.value}  "
              f"(set api.key in settings.toml or ${KEY_VARIABLE} to choose your own)", flush=True)
    return [Mount("/v1", app=build_api(manager, settings, key))]
