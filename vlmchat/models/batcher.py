"""A simple dynamic batcher in front of the model manager.

Requests waiting at the same time on the same adapter with equal generation parameters are
answered by one `generate` call, so eight clients in flight cost about one batch instead of eight
turns. One worker thread runs the batches; callers block on their own result (`submit`) or read
their own stream (`stream`): a batch's new tokens are routed per row (RowStreamer), and a row
that ends, or whose reader stops or goes away, ends its stream while the rest of the batch goes on.

Every request is admitted first (`admit()`, a Ticket): that bounds everything waiting or running,
so a full queue is refused at once.
A ticket taken with `coming=True` as soon as a request arrives (the /v1 server does) tells the
batcher that one more is on its way while its body and images are still being read: a batch
waits for those, at most `window_s`, and a lone request never waits at all. A batch that already
holds two or more requests also waits while others keep arriving (less than `gap_s` apart, at most
`window_s`): eight requests sent at once reach the server a few milliseconds apart, and would
otherwise split into two or three batches.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterator

from transformers.generation.streamers import BaseStreamer

from ..errors import NoModelError, VlmchatError
from .answers import STOP_CHECK_S, Answer, cut_at_stop, local_answer


class BusyError(VlmchatError):
    """Too many requests are waiting; the caller should retry later (HTTP 429)."""


class Ticket:
    """One admitted request: counted in the queue until released; `coming` while it is still being read."""

    def __init__(self, batcher: "Batcher", coming: bool):
        self.batcher, self.coming, self.released = batcher, coming, False

    def arrived(self) -> None:
        """The request is queued (or will not be batched): batches stop waiting for it."""
        with self.batcher.condition:
            if self.coming:
                self.coming = False
                self.batcher.coming -= 1
                self.batcher.condition.notify_all()

    def release(self) -> None:
        """The request is answered or abandoned: its place in the queue is free (safe to call twice)."""
        self.arrived()
        with self.batcher.condition:
            if not self.released:
                self.released = True
                self.batcher.in_flight -= 1

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RowStream:
    """A streamed request's row in a batch: the Answers handed to its reader, and whether the row should stop."""

    def __init__(self, stop: threading.Event | None = None):
        self.updates: queue.SimpleQueue = queue.SimpleQueue()  # growing Answers, the finished one, or an exception
        self.stop = stop or threading.Event()  # the caller's Stop (one may be shared by several streams)
        self.closed = threading.Event()  # the reader has gone
        self.started = time.perf_counter()
        self.first: float | None = None  # seconds to the first text shown
        self.shown = ""

    @property
    def stopped(self) -> bool:
        """True once the caller stopped the row or its reader went away."""
        return self.stop.is_set() or self.closed.is_set()

    def seconds(self) -> float:
        """Seconds since the request was made (queue wait included)."""
        return time.perf_counter() - self.started

    def show(self, text: str, model: str) -> None:
        """Hand the reader the answer so far, if it changed."""
        if text == self.shown:
            return
        self.shown = text
        if self.first is None:
            self.first = self.seconds()
        self.updates.put(Answer(text, model=model, latency_s=self.seconds(), first_token_s=self.first, done=False))

    def read(self) -> Iterator[Answer]:
        """The Answers as they come, up to the finished one (an error is raised); the row stops when this is closed."""
        try:
            while True:
                try:
                    update = self.updates.get(timeout=STOP_CHECK_S)
                except queue.Empty:  # still waiting (the queue, a long prefill): stopped meanwhile?
                    if self.stop.is_set():
                        return
                    continue
                if isinstance(update, BaseException):
                    raise update
                yield update
                if update.done:
                    return
        finally:
            self.closed.set()


class RowStreamer(BaseStreamer):
    """The streamer of one batched `generate`: each step's (batch,) new tokens are decoded per streamed row and
    shown to that row's reader; a row that ends (end of turn, a stop string, stopped, reader gone) gets its
    finished Answer at once. Also a stopping criterion that ends those rows, so the rest of the batch goes on."""

    def __init__(self, rows: list[RowStream | None], prompts: list[int], params, model, processor,
                 adapter: str | None):
        from ..evaluate.score import _end_ids

        self.rows, self.prompts, self.params, self.model, self.processor, self.adapter = \
            rows, prompts, params, model, processor, adapter
        tokenizer = processor.tokenizer
        self.ends = (_end_ids(model, tokenizer) | {tokenizer.pad_token_id}) - {None}  # as local_answer counts
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.texts = [_RowText(tokenizer) if row is not None else None for row in rows]
        self.open = [row is not None for row in rows]

    def put(self, value) -> None:
        """Route one step's new tokens (batch,) to their rows; the prompt (batch, length) comes first and is skipped."""
        if value.dim() > 1:
            return
        for index, token in enumerate(value.tolist()):
            if self.open[index]:
                self._add(index, token)

    def end(self) -> None:
        """Generation is over: every row still open is finished (max new tokens reached)."""
        for index, is_open in enumerate(self.open):
            if is_open:
                self._finish(index)

    def __call__(self, input_ids, scores, **kwargs):
        """Stopping criterion: (batch,) True for the streamed rows that have ended, were stopped or lost their reader."""
        import torch

        done = [row is not None and (not is_open or row.stopped) for row, is_open in zip(self.rows, self.open)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _add(self, index: int, token: int) -> None:
        self.tokens[index].append(token)
        if token in self.ends:
            return self._finish(index)
        shown, stopped = cut_at_stop(self.texts[index].add(token), self.params.stop_strings, final=False)
        if stopped or self.rows[index].stopped:
            return self._finish(index)
        self.rows[index].show(shown, self.adapter or "base")

    def _finish(self, index: int) -> None:
        self.open[index] = False
        row = self.rows[index]
        row.updates.put(local_answer(self.texts[index].text, self.tokens[index], self.prompts[index], self.params,
                                     self.model, self.processor, self.adapter, row.seconds(), row.first, strip=False))


class _RowText:
    """One row's text, decoded token by token: tokenizers' DecodeStream where the tokenizer has its Rust backend,
    else the whole row again each step."""

    def __init__(self, tokenizer):
        from tokenizers.decoders import DecodeStream

        self.tokenizer, self.text, self.tokens = tokenizer, "", []
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        self.stream = DecodeStream(skip_special_tokens=True)

    def add(self, token: int) -> str:
        """The text with `token` added."""
        if self.backend is not None:
            self.text += self.stream.step(self.backend, token) or ""
        else:
            self.tokens.append(token)
            self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        return self.text


@dataclass(eq=False)  # compared by identity: a conversation holds images
class _Request:
    conversation: list[dict]
    params: object
    adapter: str | None
    stream: RowStream | None = None  # None: answered whole through `future`
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        """Requests batch together when their keys are equal. One that samples with a seed goes alone: a batch draws
        its rows from one seeded generator, so five equal seed-1 requests got different answers (API reviewer)."""
        params = self.params
        seeded = getattr(params, "seed", -1) >= 0 and getattr(params, "temperature", 0) > 0
        return self.adapter, params, id(self) if seeded else None

    def fail(self, exc: BaseException) -> None:
        """Hand `exc` to the waiting caller or the stream's reader."""
        if self.stream is None:
            self.future.set_exception(exc)
        else:
            self.stream.updates.put(exc)


RunBatch = Callable[[list[list[dict]], object, "str | None", "list[RowStream | None]"], list]


class Batcher:
    """Groups concurrent single requests into batches for `run_batch(conversations, params, adapter, streams)`:
    `streams` holds each row's RowStream (None for a row answered whole), which run_batch feeds through a
    RowStreamer; it returns the Answers of all rows."""

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, window_s: float = 0.05, max_queue: int = 32,
                 gap_s: float = 0.005):
        self.run_batch, self.max_batch, self.window_s, self.max_queue = run_batch, max_batch, window_s, max_queue
        self.gap_s = gap_s
        self.pending: list[_Request] = []
        self.in_flight = 0  # admitted requests, waiting or running
        self.coming = 0  # admitted with coming=True and not queued yet
        self.admitted_at = 0.0  # when the last request was admitted
        self.batches: list[int] = []  # sizes of the batches run, for tests and benchmarks
        self.condition = threading.Condition()
        self.worker: threading.Thread | None = None
        self.idle = threading.Event()  # no batch is generating
        self.idle.set()
        _BATCHERS.add(self)

    def admit(self, coming: bool = False) -> Ticket:
        """A Ticket counting one request in flight until released, or BusyError when the queue is full."""
        with self.condition:
            if self.in_flight >= self.max_queue:
                raise BusyError(f"The model is busy: {self.in_flight} requests are waiting or running "
                                f"(server.max_queue = {self.max_queue}); retry in a moment.")
            self.in_flight += 1
            self.coming += coming
            self.admitted_at = time.perf_counter()
        return Ticket(self, coming)

    def submit(self, conversation: list[dict], params, adapter: str | None, ticket: Ticket | None = None):
        """The answer to one conversation, generated in a batch with the requests waiting beside it.

        `ticket`: the caller's admission (it stays the caller's to release); None = admitted here."""
        with self._admitted(ticket) as ticket:
            return self._queue(_Request(conversation, params, adapter), ticket).future.result()

    def stream(self, conversation: list[dict], params, adapter: str | None, ticket: Ticket | None = None,
               stop: threading.Event | None = None) -> Iterator[Answer]:
        """The growing Answers to one conversation (done=False), then the finished one, generated in a batch with
        the requests waiting beside it; setting `stop` or closing this iterator ends this row only.

        `ticket`: as for `submit`."""
        with self._admitted(ticket) as ticket:
            row = RowStream(stop)
            self._queue(_Request(conversation, params, adapter, row), ticket)
            yield from row.read()

    @contextlib.contextmanager
    def _admitted(self, ticket: Ticket | None) -> Iterator[Ticket]:
        """The caller's ticket (it stays the caller's to release), or one admitted here and released after."""
        if ticket is not None:
            yield ticket
            return
        with self.admit() as own:
            yield own

    def _queue(self, request: _Request, ticket: Ticket) -> _Request:
        with self.condition:
            self.pending.append(request)
            self._start_worker()
            self.condition.notify_all()
        ticket.arrived()
        return request

    def _start_worker(self) -> None:
        if self.worker is None or not self.worker.is_alive():
            self.worker = threading.Thread(target=self._work, name="vlmchat-batcher", daemon=True)
            self.worker.start()

    def _next_batch(self) -> list[_Request]:
        """Wait for a request and, at most `window_s`, for those on their way or still arriving; take those
        sharing its key."""
        with self.condition:
            while not self.pending:
                self.condition.wait()
            deadline = self.pending[0].queued + self.window_s
            while (wait := self._worth_waiting(deadline)) > 0:
                self.condition.wait(wait)
            batch = self._same_key()[:self.max_batch]
            self.pending = [request for request in self.pending if request not in batch]
            return batch

    def _worth_waiting(self, deadline: float) -> float:
        """Seconds the forming batch may wait for more (0: start it now): while requests are on their way, or
        while a batch of two or more sees requests arriving less than `gap_s` apart; never past `deadline`."""
        now, size = time.perf_counter(), len(self._same_key())
        if size >= self.max_batch or deadline <= now:
            return 0.0
        if self.coming:
            return deadline - now
        if size > 1:
            return max(0.0, min(deadline, self.admitted_at + self.gap_s) - now)
        return 0.0

    def _same_key(self) -> list[_Request]:
        key = self.pending[0].key
        return [request for request in self.pending if request.key == key]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            self.batches.append(len(batch))
            self.idle.clear()
            try:
                self._answer(batch)
            finally:
                self.idle.set()

    def _answer(self, batch: list[_Request]) -> None:
        """Run one batch; if it fails as a whole, each request is tried alone so one bad input fails alone."""
        try:
            answers = self.run_batch([r.conversation for r in batch], batch[0].params, batch[0].adapter,
                                     [r.stream for r in batch])
        except BaseException as exc:  # handed to the waiting callers
            if len(batch) == 1 or not isinstance(exc, VlmchatError) or isinstance(exc, NoModelError):
                for request in batch:
                    request.fail(exc)
            else:
                for request in batch:
                    self._answer([request])
            return
        for request, answer in zip(batch, answers):
            if request.stream is None:  # a streamed row got its finished Answer from the RowStreamer
                request.future.set_result(answer)


_BATCHERS: "weakref.WeakSet[Batcher]" = weakref.WeakSet()


@atexit.register
def _finish_running_batches(timeout_s: float = 30.0) -> None:
    """At exit, let a batch that is still generating finish: a stream's reader has its answer as soon as its row
    ends, a step before `generate` returns, and torch aborts the process when the interpreter ends under it."""
    for batcher in list(_BATCHERS):
        batcher.idle.wait(timeout_s)
