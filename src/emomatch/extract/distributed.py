"""Ray engine for extraction: the same chunks, run by Ray actors on a cluster or locally."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from emomatch.errors import EmomatchError, WorkerError
from emomatch.extract.base import Extractor, Utterance
from emomatch.extract.worker import WORKER_DIED, ChunkResult, extract_chunk


class _Worker:
    """Holds one set of extractors for its whole life, like a local worker process."""

    def __init__(self, extractors: Mapping[str, Extractor]) -> None:
        self.extractors = dict(extractors)

    def run(self, items: Sequence[Utterance]) -> ChunkResult:
        return extract_chunk(self.extractors, items)


def ray_results(
    extractors: Mapping[str, Extractor],
    chunks: list[list[Utterance]],
    workers: int,
    address: str | None = None,
) -> Iterator[ChunkResult]:
    """Yield chunk results as Ray actors finish them; the caller writes the store."""
    try:
        import ray
    except ImportError:
        raise EmomatchError(
            "--engine ray needs Ray: pip install 'emomatch[ray]' (or pip install ray)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": max(workers, 1)}
        ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
    try:
        actor = ray.remote(num_cpus=1)(_Worker)
        ref = ray.put(dict(extractors))
        # Ray adds `.remote` to actor handles at run time; its stubs cannot express that.
        pool: list[Any] = [actor.remote(ref) for _ in range(max(workers, 1))]
        pending: dict[Any, int] = {}
        queue = iter(chunks)
        for k, worker in enumerate(pool):
            for _ in range(2):
                chunk = next(queue, None)
                if chunk is not None:
                    pending[worker.run.remote(chunk)] = k
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                # An actor that died (killed, out of memory) is a fault of the machine, not of
                # the data: the same words as for a local worker.
                raise WorkerError(WORKER_DIED.replace("process", "(Ray actor)", 1)) from None
            yield result
            chunk = next(queue, None)
            if chunk is not None:
                pending[pool[k].run.remote(chunk)] = k
    finally:
        if started_here:
            ray.shutdown()
