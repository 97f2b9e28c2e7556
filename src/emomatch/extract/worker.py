"""What one extraction worker does with a chunk of utterances, for every engine.

The local process pool (:mod:`emomatch.extract.run`) and the Ray actors
(:mod:`emomatch.extract.distributed`) both run :func:`extract_chunk`; keeping it here lets
each engine know it without the two knowing each other.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from emomatch.extract.base import Extractor, Features, ItemError, Result, Utterance

WORKER_DIED = (
    "an extraction worker process died (killed, out of memory, or a crash in native code); "
    "the parts already written are kept: run the same command again to continue "
    "(with fewer --workers if memory is short)"
)


@dataclass
class ChunkResult:
    ids: list[str]
    arrays: dict[str, list[np.ndarray]]
    lengths: dict[str, list[int]]
    errors: list[dict[str, str]]
    seconds: float
    failed_ids: set[str] = field(default_factory=set)


def extract_modalities(
    extractors: Mapping[str, Extractor], items: Sequence[Utterance]
) -> dict[str, list[Result]]:
    """Each modality's results of the items, in memory (no store): one per item, in order."""
    # The acoustic extractor cuts with start/end: hand it the audio's own segment.
    audio_items = [replace(it, start=it.audio_start, end=it.audio_end) for it in items]
    return {
        m: ex.extract(audio_items if m == "acoustic" else items) for m, ex in extractors.items()
    }


def extract_chunk(extractors: Mapping[str, Extractor], items: Sequence[Utterance]) -> ChunkResult:
    """All modalities of a chunk; an item that fails any modality is reported and left out."""
    per_modality = extract_modalities(extractors, items)
    result = ChunkResult(
        ids=[],
        arrays={m: [] for m in extractors},
        lengths={m: [] for m in extractors},
        errors=[],
        seconds=0.0,
    )
    for i, item in enumerate(items):
        outcomes = {m: per_modality[m][i] for m in extractors}
        bad = {m: o for m, o in outcomes.items() if isinstance(o, ItemError)}
        if bad:
            for m, o in bad.items():
                assert isinstance(o, ItemError)
                result.errors.append({"id": item.id, "modality": m, "reason": o.reason})
            result.failed_ids.add(item.id)
            continue
        result.ids.append(item.id)
        seconds = 0.0
        for m, outcome in outcomes.items():
            assert isinstance(outcome, Features)
            result.arrays[m].append(outcome.array)
            result.lengths[m].append(outcome.length)
            seconds = max(seconds, outcome.seconds)
        result.seconds += seconds
    return result


# One set of extractors per worker process, built once by the pool's initializer: models and
# openSMILE objects are too costly to rebuild per chunk.
_worker_extractors: dict[str, Extractor] = {}


def init_worker(extractors: Mapping[str, Extractor], threads: int) -> None:
    # Bound the math libraries' threads so that workers do not oversubscribe the cores. torch is
    # configured only if the extractors brought it in (it takes seconds to import, for nothing
    # with openSMILE); one imported later reads the environment variables.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    # A worker holds a write end of its own task queue, so it never sees the queue close: if the
    # main process is killed (SIGKILL, the OOM killer) the worker would wait forever, holding
    # its models in memory. It leaves as soon as it is orphaned instead.
    parent = os.getppid()

    def leave_when_orphaned() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=leave_when_orphaned, name="orphan-watch", daemon=True).start()
    _worker_extractors.clear()
    _worker_extractors.update(extractors)


def run_in_worker(items: Sequence[Utterance]) -> ChunkResult:
    return extract_chunk(_worker_extractors, items)
