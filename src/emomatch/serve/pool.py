"""A fixed set of prediction threads with a bounded waiting line, awaited from the event loop.

Each thread owns one predictor (its own model and extractors) and never shares it, so nothing
needs to be thread-safe inside the predictor. At most ``workers + queue`` jobs are admitted at
any time; one more is refused at once with :class:`PoolFull` (the service answers 503), which
bounds the memory held by decoded clips and features however many requests arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

P = TypeVar("P")
T = TypeVar("T")

log = logging.getLogger(__name__)


class PoolFull(Exception):
    """Every worker is busy and the waiting line is full."""


@dataclass
class _Job(Generic[P]):
    work: Callable[[P], Any]
    done: Callable[[Any, BaseException | None], None]
    #: set when the request went away before its job started: the job is skipped
    abandoned: threading.Event = field(default_factory=threading.Event)
    cleanup: Callable[[], None] | None = None


class PredictionPool(Generic[P]):
    """``len(predictors)`` worker threads, one predictor each, and up to ``queue`` waiting jobs."""

    def __init__(self, predictors: Sequence[P], queue_size: int) -> None:
        if not predictors:
            raise ValueError("a prediction pool needs at least one predictor")
        if queue_size < 0:
            raise ValueError(f"queue size must be 0 or more, got {queue_size}")
        self._predictors = list(predictors)
        self.queue_size = queue_size
        self._jobs: queue.SimpleQueue[_Job[P] | None] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._threads: list[threading.Thread] = []

    @property
    def workers(self) -> int:
        return len(self._predictors)

    @property
    def capacity(self) -> int:
        """Jobs admitted at once: one running per worker plus the waiting line."""
        return self.workers + self.queue_size

    def full(self) -> bool:
        with self._guard:
            return self._admitted >= self.capacity

    def stats(self) -> dict[str, int]:
        with self._guard:
            return {
                "workers": self.workers,
                "busy": self._running,
                "waiting": self._admitted - self._running,
                "capacity": self.capacity,
            }

    def start(self) -> None:
        if self._threads:
            return
        for i, predictor in enumerate(self._predictors):
            thread = threading.Thread(
                target=self._serve, args=(predictor,), name=f"emomatch-predict-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Let the running and waiting jobs finish, then end the threads."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _serve(self, predictor: P) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._guard:
                self._running += 1
            result: Any = None
            error: BaseException | None = None
            try:
                if not job.abandoned.is_set():
                    result = job.work(predictor)
            except Exception as exc:  # handed to the request, which answers for it
                error = exc
            finally:
                if job.cleanup is not None:
                    try:
                        job.cleanup()
                    except OSError as exc:
                        log.warning("could not remove an upload's temporary files: %s", exc)
                with self._guard:
                    self._running -= 1
                    self._admitted -= 1
            job.done(result, error)

    async def run(self, work: Callable[[P], T], cleanup: Callable[[], None] | None = None) -> T:
        """Run ``work(predictor)`` on a free worker and return its result; raise
        :class:`PoolFull` at once when no place is left (``cleanup`` is then not called: the
        caller still owns what it would clean). ``cleanup`` runs on the worker after the work,
        also when the awaiting request was cancelled meanwhile."""
        if not self._threads:
            raise RuntimeError("prediction pool not started")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def done(result: Any, error: BaseException | None) -> None:
            # RuntimeError: the loop ended (shutdown) while the job ran; nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        job: _Job[P] = _Job(work=work, done=done, cleanup=cleanup)
        with self._guard:
            if self._admitted >= self.capacity:
                raise PoolFull(
                    f"all {self.workers} prediction worker(s) are busy and "
                    f"{self.queue_size} request(s) are already waiting"
                )
            self._admitted += 1
        self._jobs.put(job)
        try:
            return await future
        except asyncio.CancelledError:
            job.abandoned.set()
            raise
