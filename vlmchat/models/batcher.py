"""A simple dynamic batcher in front of the model manager.

Requests waiting at the same time on the same adapter with equal generation parameters are
answered by one `generate` call, so eight clients in flight cost about one batch instead of eight
turns. One worker thread runs the batches; callers block on their own result.

Every request is admitted first (`admit()`, a Ticket): that bounds everything waiting or running
(the batched requests and the streams the API runs directly), so a full queue is refused at once.
A ticket taken with `coming=True` as soon as a request arrives (the /v1 server does) tells the
batcher that one more is on its way while its body and images are still being read: a batch
waits for those, at most `window_s`, and a lone request never waits at all.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ..errors import NoModelError, VlmchatError


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


@dataclass(eq=False)  # compared by identity: a conversation holds images
class _Request:
    conversation: list[dict]
    params: object
    adapter: str | None
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        return self.adapter, self.params


RunBatch = Callable[[list[list[dict]], object, "str | None"], list]


class Batcher:
    """Groups concurrent single requests into batches for `run_batch(conversations, params, adapter)`."""

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, window_s: float = 0.05, max_queue: int = 32):
        self.run_batch, self.max_batch, self.window_s, self.max_queue = run_batch, max_batch, window_s, max_queue
        self.pending: list[_Request] = []
        self.in_flight = 0  # admitted requests, waiting or running
        self.coming = 0  # admitted with coming=True and not queued yet
        self.batches: list[int] = []  # sizes of the batches run, for tests and benchmarks
        self.condition = threading.Condition()
        self.worker: threading.Thread | None = None

    def admit(self, coming: bool = False) -> Ticket:
        """A Ticket counting one request in flight until released, or BusyError when the queue is full."""
        with self.condition:
            if self.in_flight >= self.max_queue:
                raise BusyError(f"The model is busy: {self.in_flight} requests are waiting or running "
                                f"(server.max_queue = {self.max_queue}); retry in a moment.")
            self.in_flight += 1
            self.coming += coming
        return Ticket(self, coming)

    def submit(self, conversation: list[dict], params, adapter: str | None, ticket: Ticket | None = None):
        """The answer to one conversation, generated in a batch with the requests waiting beside it.

        `ticket`: the caller's admission (it stays the caller's to release); None = admitted here."""
        own = ticket is None
        ticket = ticket or self.admit()
        try:
            request = _Request(conversation, params, adapter)
            with self.condition:
                self.pending.append(request)
                self._start_worker()
                self.condition.notify_all()
            ticket.arrived()
            return request.future.result()
        finally:
            if own:
                ticket.release()

    def _start_worker(self) -> None:
        if self.worker is None or not self.worker.is_alive():
            self.worker = threading.Thread(target=self._work, name="vlmchat-batcher", daemon=True)
            self.worker.start()

    def _next_batch(self) -> list[_Request]:
        """Wait for a request and, at most `window_s`, for those on their way; take those sharing its key."""
        with self.condition:
            while not self.pending:
                self.condition.wait()
            deadline = self.pending[0].queued + self.window_s
            while self.coming and len(self._same_key()) < self.max_batch and \
                    (left := deadline - time.perf_counter()) > 0:
                self.condition.wait(left)
            batch = self._same_key()[:self.max_batch]
            self.pending = [request for request in self.pending if request not in batch]
            return batch

    def _same_key(self) -> list[_Request]:
        key = self.pending[0].key
        return [request for request in self.pending if request.key == key]

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            self.batches.append(len(batch))
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        """Run one batch; if it fails as a whole, each request is tried alone so one bad input fails alone."""
        try:
            answers = self.run_batch([r.conversation for r in batch], batch[0].params, batch[0].adapter)
        except NoModelError as exc:
            for request in batch:
                request.future.set_exception(exc)
            return
        except BaseException as exc:  # handed to the waiting callers
            if len(batch) == 1 or not isinstance(exc, VlmchatError):
                for request in batch:
                    request.future.set_exception(exc)
            else:
                for request in batch:
                    self._answer([request])
            return
        for request, answer in zip(batch, answers):
            request.future.set_result(answer)
