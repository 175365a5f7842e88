"""OpenAI-compatible endpoints used as models: a hosted API, vLLM, SGLang, Ollama, LM Studio, another vlmchat.

The official `openai` client does the talking. An `Endpoint` answers the processor-style messages
the rest of vlmchat uses ({"type": "image", "image": PIL} parts become `image_url` data URLs):
one answer, a stream, or a batch with up to `max_concurrency` requests in flight (from threads kept
for the endpoint, so a batch's requests leave together). Every Answer carries its tokens (the
server's `usage`), latency and cost (when the endpoint has a price).
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Iterator

from ..errors import EndpointTimeout, EndpointUnusable, InputError, VlmchatError, first_line
from .answers import ENDPOINT_PREFIX, STOP_CHECK_S, Answer, GenerationParams
from ..settings import EndpointSettings


_END = object()  # a stream's last piece: the server's answer is complete
KEYLESS = "keyless"  # the openai client's key for an endpoint with none; never sent (`_create` omits the header)


def image_data_url(image) -> str:
    """A PIL image as a `data:image/png;base64,...` URL (lossless, as the model would see the file)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _openai_part(part: dict, detail: str = "") -> dict:
    if part.get("type") == "image":
        return {"type": "image_url", "image_url": {"url": image_data_url(part["image"]), **({"detail": detail}
                                                                                           if detail else {})}}
    return {"type": "text", "text": part.get("text", "")}


def to_openai_messages(messages: list[dict], detail: str = "") -> list[dict]:
    """Processor-style messages (images as PIL) as OpenAI chat messages (images as data URLs, at `detail` where
    one is asked for: low / auto / high, OpenAI's image_url.detail)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [_openai_part(part, detail) for part in content]
        out.append({"role": message["role"], "content": content})
    return out


ADAPTABLE = ("max_tokens", "temperature", "top_p", "seed")  # fields a model may refuse that an answer can go without


def shown_url(url: str) -> str:
    """`url` as messages show it: a password or key written into it (user:password@, ?api_key=...) masked."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be read)"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = "&".join(f"{pair.partition('=')[0]}=***" for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class Endpoint:
    """One configured endpoint; `api_key` given here stays in memory, else it is read from `api_key_env`."""

    def __init__(self, entry: EndpointSettings, api_key: str | None = None):
        self.entry = entry
        self._api_key = api_key
        self._client = None
        self._pool: ThreadPoolExecutor | None = None  # the threads that send a batch's requests, made on first use
        self._lock = threading.Lock()
        self.spent = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}  # since start
        self.refused: set[str] = set()  # request fields its model refused as unsupported (learned, then left out)

    def _count(self, answer: Answer) -> Answer:
        """Add a finished answer to `spent` and return it."""
        with self._lock:
            self.spent["requests"] += 1
            self.spent["prompt_tokens"] += answer.prompt_tokens or 0
            self.spent["completion_tokens"] += answer.completion_tokens or 0
            self.spent["cost_usd"] += answer.cost_usd or 0.0
        return answer

    @property
    def name(self) -> str:
        """The model choice naming this endpoint: "endpoint:NAME"."""
        return ENDPOINT_PREFIX + self.entry.name

    def client(self):
        """The openai client for this endpoint (made once), or InputError when its key is missing."""
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(base_url=self.entry.base_url, api_key=self._key() or KEYLESS,
                                      timeout=self.entry.timeout_s, max_retries=1)
            return self._client

    def pool(self) -> ThreadPoolExecutor:
        """The endpoint's max_concurrency sending threads (made once): a batch needs no thread started first."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, self.entry.max_concurrency),
                                                thread_name_prefix=f"vlmchat-{self.entry.name}")
            return self._pool

    def close(self) -> list:
        """No more requests: the sending threads end, at once where idle; those still waiting on the server are
        returned (a thread blocked in a request cannot be stopped, only left)."""
        import threading

        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return []
        pool.shutdown(wait=False, cancel_futures=True)
        prefix = f"vlmchat-{self.entry.name}_"
        return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]

    def _key(self) -> str:
        if self._api_key:
            return check_key(self._api_key, f"The API key given for endpoint '{self.entry.name}'")
        variable = self.entry.api_key_env
        if not variable:
            return ""  # none configured: none sent (a server that checks keys counts a wrong one as a failed login)
        key = os.environ.get(variable, "")
        if not key:
            raise EndpointUnusable(f"Endpoint '{self.entry.name}' needs its API key in the environment variable "
                                   f"{variable}; set it (export {variable}=...) and start vlmchat again.")
        return check_key(key, f"Endpoint '{self.entry.name}''s API key (in {variable})")

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """US dollars for these tokens at the endpoint's price; None when no price is set or tokens are unknown."""
        entry = self.entry
        if not (entry.price_in or entry.price_out) or prompt_tokens is None or completion_tokens is None:
            return None
        return (prompt_tokens * entry.price_in + completion_tokens * entry.price_out) / 1e6

    def _check(self, params: GenerationParams) -> None:
        """InputError for what an OpenAI-compatible API cannot do."""
        if params.num_beams > 1:
            raise InputError(f"Beam search runs only on a local model; endpoint '{self.entry.name}' answers with "
                             "num beams 1.")

    def _request(self, messages: list[dict], params: GenerationParams) -> dict:
        self._check(params)
        request = {"model": self.entry.model, "messages": to_openai_messages(messages, params.image_detail),
                   "max_tokens": int(params.max_new_tokens), "temperature": float(params.temperature)}
        if params.temperature > 0:
            request["top_p"] = float(params.top_p)
        if params.seed >= 0:
            request["seed"] = int(params.seed)
        if params.stop_strings:
            request["stop"] = list(params.stop_strings)
        return request

    def _as_accepted(self, request: dict) -> dict:
        """`request` without the fields this endpoint's model refused; max_tokens as max_completion_tokens there."""
        request = {key: value for key, value in request.items() if key not in self.refused or key == "max_tokens"}
        if "max_tokens" in self.refused and "max_tokens" in request:
            request["max_completion_tokens"] = request.pop("max_tokens")
        return request

    def _create(self, request: dict, **extra):
        """chat.completions.create of `request` as this endpoint's model accepts it (`_as_accepted`); a field it
        refuses as unsupported is learned, dropped (or renamed), and the request sent again. OpenAI's reasoning models
        (o-series, gpt-5) refuse max_tokens (they take max_completion_tokens) and any temperature but their default:
        every Chat request to them failed."""
        import openai

        client = self.client()
        if client.api_key == KEYLESS:  # no Authorization header at all: the client sends one unless told not to
            extra["extra_headers"] = {"Authorization": openai.Omit()}
        while True:
            sent = self._as_accepted(request)
            try:
                return client.chat.completions.create(**sent, **extra)
            except openai.BadRequestError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                field = body.get("param")
                # judged by what this attempt sent (requests in flight together learn it at once); the next attempt
                # sends one adaptable field fewer, so the loop ends
                if body.get("code") not in ("unsupported_parameter", "unsupported_value") or field not in ADAPTABLE \
                        or field not in sent:
                    raise
                self.refused.add(field)

    def _answer(self, text: str, usage, started: float, finish: str | None, first: float | None = None) -> Answer:
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        return Answer(text, model=self.name, prompt_tokens=prompt, completion_tokens=completion,
                      latency_s=time.perf_counter() - started, first_token_s=first,
                      cost_usd=self.cost(prompt, completion), finish_reason=finish or "stop")

    def answer(self, messages: list[dict], params: GenerationParams = GenerationParams()) -> Answer:
        """The whole answer to one conversation."""
        return self._send(self._request(messages, params))

    def _send(self, request: dict) -> Answer:
        started = time.perf_counter()
        with self._errors():
            response = self._create(request)
        if not getattr(response, "choices", None):
            raise self._not_openai()
        choice = response.choices[0]
        return self._count(self._answer((choice.message.content or "").strip(), response.usage, started,
                                        choice.finish_reason))

    def stream(self, messages: list[dict], params: GenerationParams = GenerationParams(),
               stop=None) -> Iterator[Answer]:
        """Yield the Answer so far (done=False) as it grows, then the finished one with the server's usage.

        The request runs on one of the endpoint's threads; this reader looks at `stop` (anything with is_set())
        while it waits, and yields the Answer so far again every STOP_CHECK_S the server says nothing: Stop, or
        closing the stream (a Gradio cancel, which cannot close a generator while it runs), ends it at once, not
        when a slow server's answer or timeout comes. A server that ignores "stream" and answers with one
        chat.completion gives that answer whole."""
        request, started = self._request(messages, params), time.perf_counter()
        text, usage, finish, first, chunks = "", None, None, None, 0
        pieces, gone = queue.SimpleQueue(), threading.Event()

        def send() -> None:
            try:
                with self._errors():
                    stream = self._create(request, stream=True, stream_options={"include_usage": True})
                    try:
                        if stream.response.headers.get("content-type", "").startswith("application/json"):
                            pieces.put(self._whole(stream.response))  # a server that ignores "stream"
                        else:
                            for chunk in stream:
                                pieces.put(chunk)
                                if gone.is_set():
                                    break
                    finally:
                        stream.close()
                pieces.put(_END)
            except Exception as exc:  # raised to the reader
                pieces.put(exc)

        self.pool().submit(send)
        stopped = lambda: stop is not None and stop.is_set()  # noqa: E731
        try:
            while not stopped():
                try:
                    chunk = pieces.get(timeout=STOP_CHECK_S)
                except queue.Empty:  # nothing new, yielded all the same: a generator is closed only between yields
                    yield Answer(text, model=self.name, latency_s=time.perf_counter() - started, first_token_s=first,
                                 done=False)
                    continue
                if chunk is _END:
                    break
                if isinstance(chunk, Exception):
                    raise chunk
                chunks += 1
                usage = getattr(chunk, "usage", None) or usage
                if not getattr(chunk, "choices", None):
                    continue
                choice = chunk.choices[0]
                finish = choice.finish_reason or finish
                said = getattr(choice, "delta", None) or getattr(choice, "message", None)  # a chunk, or a whole answer
                piece = getattr(said, "content", None) or ""
                if piece:
                    first = first if first is not None else time.perf_counter() - started
                    text += piece
                    yield Answer(text, model=self.name, latency_s=time.perf_counter() - started,
                                 first_token_s=first, done=False)
        finally:
            gone.set()  # the request ends at its next piece (or its timeout) and frees its thread
        if not chunks and not stopped():
            raise self._not_openai()
        if finish is None and not stopped():  # OpenAI's last chunk says why the answer ended; a dropped stream does not
            raise InputError(f"Endpoint '{self.entry.name}' ({shown_url(self.entry.base_url)}) closed the stream "
                             f"before the answer was finished (it had sent {text.strip()[:200]!r}); ask again, "
                             "or check the server.")
        yield self._count(self._answer(text, usage, started, finish, first))

    def _whole(self, response):
        """The chat.completion a server sent whole (as JSON) to a streamed request, or the error to raise."""
        import openai
        from openai.types.chat import ChatCompletion

        try:
            body = json.loads(response.read())  # a JSONDecodeError is said as _UserErrors says it
        except Exception as exc:  # the HTTP library's (httpx, or its fork httpx2), as the client's stream says it
            if not type(exc).__module__.startswith("httpx"):
                raise
            timeout = any(kind.__name__ == "TimeoutException" for kind in type(exc).__mro__)
            raise (openai.APITimeoutError(response.request) if timeout
                   else openai.APIConnectionError(request=response.request)) from exc
        if not isinstance(body, dict) or not body.get("choices"):
            raise self._not_openai()
        return ChatCompletion.construct(**body)

    def _not_openai(self) -> InputError:
        entry = self.entry
        return InputError(f"Endpoint '{entry.name}' ({shown_url(entry.base_url)}) answered, but not in OpenAI's chat "
                          "completions format; check base_url (an OpenAI-compatible server's ends in /v1).")

    def answer_batch(self, conversations: list[list[dict]],
                     params: GenerationParams = GenerationParams()) -> list[Answer]:
        """Answers to several conversations, up to max_concurrency requests in flight (same order as given);
        the first failure is raised once all are done."""
        answers = self.answer_each(conversations, params)
        for answer in answers:
            if isinstance(answer, VlmchatError):
                raise answer
        return answers

    def answer_each(self, conversations: list[list[dict]],
                    params: GenerationParams = GenerationParams()) -> list[Answer | VlmchatError]:
        """Like answer_batch, but a failed request is returned as its error, so the others are not paid twice."""
        # Every request is built (images encoded) before any is sent, so they reach the server together and
        # a batching server (vlmchat, vLLM) answers them as one batch.
        requests = [self._request(conversation, params) for conversation in conversations]

        def one(request: dict) -> Answer | VlmchatError:
            try:
                return self._send(request)
            except VlmchatError as exc:
                return exc

        answers = list(self.pool().map(one, requests))
        # Hung: each later batch would wait alike. One request timing out may be one slow answer: not a verdict.
        if len(answers) > 1 and all(isinstance(answer, EndpointTimeout) for answer in answers):
            return [EndpointUnusable(str(answer)) for answer in answers]
        return answers

    def _errors(self):
        return _UserErrors(self)


class _UserErrors:
    """Turns the openai client's exceptions into InputErrors that say what to check."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import openai

        if isinstance(exc, json.JSONDecodeError):  # a 200 whose body (or a streamed chunk) is not JSON
            raise self.endpoint._not_openai() from None
        if exc is None or not isinstance(exc, openai.OpenAIError):
            return False
        entry = self.endpoint.entry
        where = f"Endpoint '{entry.name}' ({shown_url(entry.base_url)})"
        cut = isinstance(exc, openai.APIConnectionError) and _cut_short(exc)
        refused_alike = isinstance(exc, openai.RateLimitError) and _error_body(exc).get("code") in NOT_LOAD
        unusable = refused_alike or isinstance(exc, (openai.AuthenticationError, openai.NotFoundError)) or (
            isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError) and not cut)
        if isinstance(exc, openai.APITimeoutError):
            message = (f"{where} did not answer within {entry.timeout_s:.0f} s (asked twice: a timeout is retried "
                       "once); raise timeout_s or check the server.")
        elif cut:
            message = f"{where} closed the connection before its answer was complete; ask again, or check the server."
        elif isinstance(exc, openai.APIConnectionError):
            message = f"{where} cannot be reached; check that the server runs and that base_url is right."
        elif isinstance(exc, openai.AuthenticationError) and not (self.endpoint._api_key or entry.api_key_env):
            message = (f"{where} needs an API key, and none was given: name the environment variable holding it with "
                       f"api_key_env in [endpoints.{entry.name}], or give the key when adding the endpoint.")
        elif isinstance(exc, openai.AuthenticationError):
            message = f"{where} refused the API key; check {entry.api_key_env or 'the key you gave'}."
        elif isinstance(exc, openai.NotFoundError) and not _about_model(exc, entry.model):
            # a 404 for the address (base_url without /v1, or with /chat/completions), not for the model
            message = (f"{where} has no chat completions at {shown_url(entry.base_url).rstrip('/')}/chat/completions "
                       f"({_server_message(exc)}); check base_url: an OpenAI-compatible server's ends in /v1 (the "
                       "client adds /chat/completions).")
        elif isinstance(exc, openai.NotFoundError):
            message = f"{where} does not know the model '{entry.model}': {_server_message(exc)}"
        elif refused_alike:
            message = f'{where} refused the request (HTTP 429): "{_server_message(exc)}"'
        elif isinstance(exc, openai.RateLimitError):
            own = _server_message(exc, own=True)
            said = f' (it says "{own}")' if own else ""
            message = f"{where} is busy or over its rate limit{said}; lower max_concurrency or retry later."
        elif isinstance(exc, openai.InternalServerError) and exc.status_code in GATEWAY:
            own = _server_message(exc, own=True)
            message = (f"{where} answered HTTP {exc.status_code} {HTTPStatus(exc.status_code).phrase}"
                       f"{f' ({own})' if own else ''}: {GATEWAY[exc.status_code]}; try again later.")
        elif isinstance(exc, openai.InternalServerError):
            message = (f"{where} failed (HTTP {exc.status_code}): {_server_message(exc)}; retry later or check the "
                       "server.")
        elif not isinstance(exc, openai.APIStatusError):  # an error event in a stream already answered 200
            message = f"{where} failed while answering: {_server_message(exc)}; ask again later or check the server."
        else:
            message = f"{where} refused the request: {_server_message(exc)}"
        # A server (or a proxy before it) may echo the request's headers in its error: the key must not reach the
        # chat, the other logins or the log with it.
        key = getattr(self.endpoint._client, "api_key", None)
        if key and key != KEYLESS:  # in any case: a server may lower-case the header it echoes
            message = re.sub(re.escape(key), "***", message, flags=re.IGNORECASE)
        timeout = isinstance(exc, openai.APITimeoutError)
        raise (EndpointUnusable if unusable else EndpointTimeout if timeout else InputError)(message) from None


def _cut_short(exc) -> bool:
    """Whether the connection error is a server that answered and then closed mid-answer (not one never reached).

    By the cause's class names: the openai client's HTTP library (httpx, or its fork httpx2) names them alike."""
    cause = exc.__cause__
    return cause is not None and any(kind.__name__ in ("RemoteProtocolError", "ReadError")
                                     for kind in type(cause).__mro__)


# 429s that are not about load (another vlmchat's lockout after wrong keys, a spent quota): every request is refused
# alike for a while, and the server's message says what to do
NOT_LOAD = ("too_many_failed_attempts", "insufficient_quota")

GATEWAY = {  # statuses a proxy in front of the server answers with, often as a web page ("Error code: 502")
    502: "a proxy in front of the server could not reach it",
    504: "a proxy in front of the server gave up waiting for its answer",
}


def _error_body(exc) -> dict:
    """The server's error in OpenAI's shape ({"message", "type", "param", "code"}), {} when it sent none."""
    body = getattr(exc, "body", None)
    body = body.get("error", body) if isinstance(body, dict) else None
    return body if isinstance(body, dict) else {}


def _server_message(exc, own: bool = False) -> str:
    """The server's own error message (OpenAI's error shape), else the exception's text ("" with `own`)."""
    said = _error_body(exc).get("message")
    if said:
        return str(said)[:500]
    return "" if own else first_line(exc, 500)


def _about_model(exc, model: str) -> bool:
    """Whether a 404 is about the model (OpenAI's code or param, or the server names the model), not the address:
    vlmchat's own 404 for a wrong path names its GET /v1/models route, and was read as "does not know the model"."""
    body = _error_body(exc)
    if body.get("code") == "model_not_found" or body.get("param") == "model":
        return True
    said = _server_message(exc)
    return "model" in said.lower() and re.search(rf"(?<![\w.-]){re.escape(model)}(?![\w.-])", said) is not None


REMEMBERED_FILE = "endpoints.json"  # under the outputs folder, readable by the owner only


def check_key(key: str, whose: str) -> str:
    """`key` if it can be sent as a Bearer token, else EndpointUnusable saying what is wrong with it.

    A key pasted with a line break, a space or a typographic character inside cannot go into an HTTP header: the
    request failed before it was sent, and the message said the server "cannot be reached"."""
    odd = next((char for char in key if not "!" <= char <= "~"), None)
    if odd is None:
        return key
    what = {"\n": "a line break", "\r": "a line break", "\t": "a tab", " ": "a space"}.get(odd, f"the character {odd!r}")
    raise EndpointUnusable(f"{whose} holds {what}, which API keys never do: copy the key again, exactly as the "
                           "provider shows it.")


def check_endpoint(name: str, base_url: str, model: str, price_in=0.0, price_out=0.0,
                   max_concurrency=4) -> EndpointSettings:
    """An endpoint typed into the Model tab, checked exactly as an [endpoints.NAME] table (SettingsError if not),
    a mistake in the three fields said in the form's words (not the settings file's)."""
    import re

    from ..settings import ENDPOINT_NAME, SettingsError, build_endpoints

    name, base_url, model = (name or "").strip(), (base_url or "").strip(), (model or "").strip()
    if not re.fullmatch(ENDPOINT_NAME, name):
        raise SettingsError(f"Name {name!r} cannot name an endpoint: use letters, digits and . _ - (up to 64, starting "
                            "with a letter or digit); it becomes the choice endpoint:NAME.")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError("Base URL must start with http:// or https://, e.g. http://127.0.0.1:8000/v1 (the address "
                            "before /chat/completions).")
    if not model:
        raise SettingsError("Model is empty: give the name the server knows the model by (its GET /v1/models lists "
                            "them).")
    table = {"base_url": base_url, "model": model, "price_in": float(price_in or 0),
             "price_out": float(price_out or 0), "max_concurrency": 4 if max_concurrency is None else int(max_concurrency)}
    return build_endpoints({name: table})[0]


def remember_endpoint(folder, entry: EndpointSettings, api_key: str | None, remember: bool = True) -> None:
    """Keep `entry` (and its key, if given) for later starts in `folder/endpoints.json`, mode 0600, never settings.toml;
    with `remember` False, forget an entry of its name kept before (it replaces it until vlmchat stops)."""
    import dataclasses
    import json
    from pathlib import Path

    from ..files import write_text_atomic

    file = Path(folder) / REMEMBERED_FILE
    saved = {item["entry"]["name"]: item for item in _read_remembered(file)}
    if not remember and entry.name not in saved:
        return
    if remember:
        saved[entry.name] = {"entry": dataclasses.asdict(entry), "api_key": api_key or ""}
    else:  # the old entry would come back at the next start, key and all
        del saved[entry.name]
    file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(file, json.dumps(list(saved.values()), indent=1), private=True)


def _read_remembered(file) -> list[dict]:
    import json

    try:
        items = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("entry"), dict)]


def remembered_endpoints(folder) -> list[tuple[EndpointSettings, str | None]]:
    """(entry, key or None) of every endpoint remembered in `folder`; unreadable entries are skipped."""
    from pathlib import Path

    out = []
    for item in _read_remembered(Path(folder) / REMEMBERED_FILE):
        try:
            out.append((EndpointSettings(**item["entry"]), item.get("api_key") or None))
        except TypeError:
            continue
    return out
