"""``emomatch extract``: a manifest in, a feature store out; resumable, parallel, never stopped
by one bad item.

The main process owns the store: workers (local processes or Ray actors) each build their
extractors once, turn chunks of utterances into arrays, and hand them back; the main process
writes every finished chunk as one atomic store part. An interrupted run therefore loses only
the chunks in flight, and a re-run skips every utterance already in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.corpora.manifest import read_manifest, resolve_media, validate_manifest
from emomatch.corpora.record import read_corpus_record
from emomatch.domain import MODALITIES
from emomatch.errors import DataError, WorkerError, WriteError
from emomatch.extract.base import (
    EXTRACTORS,
    Extractor,
    Utterance,
)
from emomatch.extract.worker import (
    WORKER_DIED,
    ChunkResult,
    extract_chunk,
    init_worker,
    run_in_worker,
)
from emomatch.files import describe_os_error
from emomatch.store import StoreWriter
from emomatch.threads import available_cpus

log = logging.getLogger(__name__)

DEFAULT_EXTRACTORS = {"acoustic": "acoustic", "visual": "faces", "lexical": "transformer"}
FOLD_COLUMN = re.compile(r"^fold_\d+$")
ERRORS_FILE = "errors.jsonl"


def load_builtin_extractors() -> None:
    """Importing the modules registers their extractors."""
    import emomatch.extract.acoustic  # noqa: F401
    import emomatch.extract.encoders  # noqa: F401
    import emomatch.extract.lexical  # noqa: F401
    import emomatch.extract.visual  # noqa: F401


def build_extractors(
    modalities: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, Extractor]:
    """One extractor per modality, from the registry, with per-modality keyword options."""
    if any(m not in DEFAULT_EXTRACTORS for m in modalities):
        raise DataError(f"unknown modality in {list(modalities)}; known: {', '.join(MODALITIES)}")
    chosen = {**DEFAULT_EXTRACTORS, **(names or {})}
    if any(chosen[m] not in EXTRACTORS for m in modalities):
        load_builtin_extractors()
    return {m: EXTRACTORS.get(chosen[m])(**dict((options or {}).get(m, {}))) for m in modalities}


def utterances_from_manifest(df: pd.DataFrame) -> list[Utterance]:
    def media(value: str) -> Path | None:
        return resolve_media(df, value) if value else None

    def number(value: Any) -> float | None:
        return (
            None
            if value is None or (isinstance(value, float) and math.isnan(value))
            else float(value)
        )

    def column(name: str, default: str) -> pd.Series:
        return (
            df[name] if name in df.columns else df[default] if default else pd.Series("", df.index)
        )

    crops = column("crop", "")
    audio_starts = pd.to_numeric(column("audio_start", "start").replace("", None), errors="coerce")
    audio_ends = pd.to_numeric(column("audio_end", "end").replace("", None), errors="coerce")
    return [
        Utterance(
            id=str(row["id"]),
            audio=media(str(row["audio"])),
            video=media(str(row["video"])),
            text=str(row["text"]),
            start=number(row["start"]),
            end=number(row["end"]),
            crop=str(crops[idx]) or None,
            audio_start=number(audio_starts[idx]),
            audio_end=number(audio_ends[idx]),
        )
        for idx, row in df.iterrows()
    ]


@dataclass
class ExtractionSummary:
    store: Path
    done: int
    skipped: int
    failed: int
    seconds: float
    media_seconds: float
    errors_file: Path
    #: damaged parts found in the store and dropped; their utterances were extracted again
    dropped: list[str] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        return self.media_seconds / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            (
                f"extracted {self.done}, skipped (already in the store) {self.skipped}, "
                f"failed {self.failed} (see {self.errors_file}); {self.seconds:.1f} s wall"
            )
            + (
                # text alone has no media time: a real-time factor of 0.0 said nothing
                f", {self.media_seconds:.1f} s of media, "
                f"real-time factor {self.realtime_factor:.1f}"
                if self.media_seconds > 0
                else ""
            )
            + (
                f"; repaired the store: dropped damaged {', '.join(self.dropped)} and extracted "
                "their utterances again"
                if self.dropped
                else ""
            )
        )


def _chunks(items: Sequence[Utterance], size: int) -> list[list[Utterance]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _local_results(
    extractors: Mapping[str, Extractor], chunks: list[list[Utterance]], workers: int
) -> Iterator[ChunkResult]:
    if workers <= 1:
        for chunk in chunks:
            yield extract_chunk(extractors, chunk)
        return
    threads = max(1, available_cpus() // workers)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=init_worker, initargs=(dict(extractors), threads)
    ) as pool:
        # Bounded look-ahead keeps memory flat and the number of items in flight small.
        pending = []
        queue = iter(chunks)
        for chunk in queue:
            pending.append(pool.submit(run_in_worker, chunk))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = pending.pop(0)
            try:
                result = done.result()
            except BrokenProcessPool:
                raise WorkerError(WORKER_DIED) from None
            yield result
            nxt = next(queue, None)
            if nxt is not None:
                try:
                    pending.append(pool.submit(run_in_worker, nxt))
                except BrokenProcessPool:
                    raise WorkerError(WORKER_DIED) from None


@dataclass
class ExtractionJob:
    """How a run extracts, whatever it extracts: one extractor per modality, run in chunks of
    ``chunk_size`` utterances by ``workers`` local processes or Ray actors (``engine``); a test
    or another engine may hand its own ``results`` stream instead."""

    extractors: Mapping[str, Extractor]
    workers: int = 1
    chunk_size: int = 16
    engine: str = "local"
    address: str | None = None
    progress: bool = True
    results: Callable[..., Iterable[ChunkResult]] | None = None

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.workers < 1:
            raise DataError(
                f"--chunk-size and --workers must be at least 1, got {self.chunk_size} and "
                f"{self.workers}"
            )
        if self.engine not in ("local", "ray") and self.results is None:
            raise DataError(f"unknown engine {self.engine!r}; use 'local' or 'ray'")

    def stream(self, items: Sequence[Utterance]) -> Iterable[ChunkResult]:
        """The chunks' results, in the order the engine finishes them."""
        chunks = _chunks(items, self.chunk_size)
        if self.results is not None:
            return self.results(self.extractors, chunks, self.workers)
        if self.engine == "ray":
            from emomatch.extract.distributed import ray_results

            return ray_results(self.extractors, chunks, self.workers, self.address)
        return _local_results(self.extractors, chunks, self.workers)


class ErrorReport:
    """``errors.jsonl``: one JSON line per bad item, flushed as it comes; a write that fails
    (a full disk) is one clear error naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise WriteError(f"cannot write {path}: {describe_os_error(exc)}") from None

    def add(self, entry: Mapping[str, Any]) -> None:
        try:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
        except OSError as exc:
            raise WriteError(f"cannot write {self.path}: {describe_os_error(exc)}") from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise WriteError(f"cannot write {self.path}: {describe_os_error(exc)}") from None


def _extract_into(
    job: ExtractionJob,
    writer: StoreWriter,
    errors: ErrorReport,
    usable: pd.DataFrame,
    problems: Sequence[Any],
    fields: Sequence[str],
) -> tuple[int, int, float, int]:
    """The run proper, with the store locked and the error report open; returns (written,
    failed, media seconds, skipped)."""
    done_ids = writer.done_ids()
    pending_df = usable[~usable["id"].isin(done_ids)]
    skipped = len(usable) - len(pending_df)
    items = utterances_from_manifest(pending_df)
    rows = pending_df.set_index("id")
    failed: set[str] = set()
    media_seconds = 0.0
    written = 0
    for p in problems:
        errors.add({"id": p.id, "modality": "manifest", "reason": str(p)})
        failed.add(p.id)
    stream = job.stream(items)
    from tqdm import tqdm

    bar = tqdm(total=len(items), unit="utt", disable=not job.progress, desc="extract")
    for result in stream:
        for e in result.errors:
            errors.add(e)
        failed |= result.failed_ids
        if result.ids:
            part = rows.loc[result.ids]
            index = pd.DataFrame(
                {
                    "id": result.ids,
                    "speaker": part["speaker"].to_numpy(),
                    "label": [lab or None for lab in part["label"]],
                    **{f: part[f].to_numpy() if f in part else "" for f in fields},
                    **{f"{m}_length": result.lengths[m] for m in job.extractors},
                }
            )
            writer.write_part(index, {m: np.stack(result.arrays[m]) for m in job.extractors})
            written += len(result.ids)
        media_seconds += result.seconds
        bar.update(len(result.ids) + len(result.failed_ids))
    bar.close()
    return written, len(failed), media_seconds, skipped


def run_extraction(
    manifest: str | Path,
    out: str | Path,
    extractors: Mapping[str, Extractor],
    classes: Sequence[str] | None = None,
    workers: int = 1,
    chunk_size: int = 16,
    engine: str = "local",
    address: str | None = None,
    progress: bool = True,
    results: Callable[..., Iterable[ChunkResult]] | None = None,
) -> ExtractionSummary:
    """Extract every pending utterance of the manifest into the store at ``out`` with one
    extractor per modality (see :func:`build_extractors`)."""
    start_time = time.perf_counter()
    job = ExtractionJob(extractors, workers, chunk_size, engine, address, progress, results)
    df = read_manifest(manifest)
    # Checked before anything is written: a store is never created from zero rows (its classes
    # would be fixed to none, refusing every later extraction into it).
    if df.empty:
        raise DataError(f"{manifest}: the manifest has no utterance rows; nothing to extract")
    labels = sorted({lab for lab in df["label"] if lab})
    classes = list(classes) if classes is not None else labels
    out = Path(out)
    errors_path = out / ERRORS_FILE
    problems = validate_manifest(df, classes=classes, check_files=False)
    bad_lines = {p.line for p in problems}
    usable = df[~df["_line"].isin(bad_lines)]
    if usable.empty:
        raise DataError(
            f"{manifest}: none of its {len(df)} row(s) can be extracted; the first problem: "
            f"{problems[0]}"
        )
    if not classes:
        log.info("no row of %s has a label: the store is an unlabeled pool", manifest)
    fields = ["split", *[c for c in df.columns if FOLD_COLUMN.match(c)]]
    # The writer holds the store's lock for the whole run: a second `emomatch extract` into the
    # same --out stops at once instead of interleaving parts with this one.
    with StoreWriter(
        out,
        classes=classes,
        modalities={m: ex.spec() for m, ex in extractors.items()},
        fields=fields,
        info={
            "manifest": str(Path(manifest).resolve()),
            # what the clips are (name, generated or real, language), for the models trained
            # on these features to say
            "corpus": read_corpus_record(manifest),
        },
    ) as writer:
        errors = ErrorReport(errors_path)
        # Closed by hand: a close that fails (its last flush on a full disk) must not replace
        # the error already on its way, nor go unreported when there is none.
        try:
            written, failed, media_seconds, skipped = _extract_into(
                job, writer, errors, usable, problems, fields
            )
        except BaseException as exc:
            with contextlib.suppress(WriteError):
                errors.close()
            if isinstance(exc, KeyboardInterrupt):
                log.warning(
                    "interrupted: the parts already written to %s are kept; run the same "
                    "command again to continue",
                    out,
                )
            raise
        errors.close()
    summary = ExtractionSummary(
        store=out,
        done=written,
        skipped=skipped,
        failed=failed,
        seconds=time.perf_counter() - start_time,
        media_seconds=media_seconds,
        errors_file=errors_path,
        dropped=[name for name, _ in writer.dropped],
    )
    # the command prints the summary itself: logged here too, it showed twice
    log.debug("%s", summary)
    return summary
