"""Speech-to-text for manifest rows that have speech but no transcript.

Corpora such as AMI segments or unlabeled pools often come without text, and the lexical
modality is then missing. :func:`transcribe_manifest` fills it with faster-whisper: a new
manifest whose ASR rows carry the ``text``, a ``words`` column (JSON ``[[word, start, end],
...]``, seconds from the segment start) and an ``asr`` column naming the model, so ASR text
can always be told apart from a human transcript.

The engine (the model folder, faster-whisper, the bundled tiny.en) is
:mod:`emomatch.extract.asr`; this module is the resumable job over a manifest.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.corpora.manifest import read_manifest, resolve_media, write_manifest
from emomatch.errors import DataError
from emomatch.extract.asr import (
    SILENCE_PEAK,
    build_model,
    check_installed,
    describe_model,
    model_dir,
    run_model,
)
from emomatch.extract.audio import SAMPLE_RATE, AudioError, load_audio
from emomatch.files import atomic_write_text

#: seconds between progress lines
_PROGRESS_EVERY_S = 10.0


@dataclass
class TranscriptionSummary:
    """What one :func:`transcribe_manifest` call did."""

    output: Path
    model: str
    #: rows run through the model in this call
    transcribed: int = 0
    #: rows taken from the partial file of an interrupted earlier run
    reused: int = 0
    #: (id, reason) for each row whose audio could not be transcribed
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: transcribed rows (this call or reused) where no speech was found: their text is empty
    silent: int = 0
    #: rows left as they were (had a transcript, with ``only_empty``)
    kept: int = 0
    #: rows whose text the model did not understand (low confidence, another language): their
    #: text is empty and ``asr_note`` says why
    refused: int = 0
    #: seconds of audio transcribed in this call
    audio_seconds: float = 0.0
    #: wall-clock seconds of this call, model loading included
    wall_seconds: float = 0.0
    #: wall-clock seconds spent in the model (decoding audio excluded)
    model_seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def real_time_factor(self) -> float:
        """Wall time over audio time (below 1: faster than real time); NaN without audio."""
        if self.audio_seconds <= 0:
            return math.nan
        return self.wall_seconds / self.audio_seconds

    def __str__(self) -> str:
        rtf = self.real_time_factor
        return (
            f"{self.transcribed} transcribed, {self.reused} reused, {self.failed} failed, "
            f"{self.kept} kept, {self.silent} without speech, {self.refused} refused (see "
            f"asr_note); {self.audio_seconds:.1f} s of "
            f"audio in {self.wall_seconds:.1f} s (real-time factor "
            f"{'n/a' if math.isnan(rtf) else f'{rtf:.3f}'}) -> {self.output}"
        )


def _segment(row: pd.Series, media_column: str) -> tuple[float | None, float | None]:
    """The row's segment of its ``media_column`` file: ``audio_start``/``audio_end`` apply to
    the audio file only; the video's soundtrack is cut with ``start``/``end``."""
    names = ("start", "end")
    if media_column == "audio" and any(
        c in row.index and str(row[c]).strip() not in ("", "nan", "None")
        for c in ("audio_start", "audio_end")
    ):
        names = ("audio_start", "audio_end")
    bounds: list[float | None] = []
    for name in names:
        value = row[name] if name in row.index else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            bounds.append(None)
            continue
        text = str(value).strip()
        if text in ("", "nan", "None"):
            bounds.append(None)
            continue
        try:
            bounds.append(float(text))
        except ValueError:
            raise AudioError(f"{name}: {text!r} is not a number of seconds") from None
    return bounds[0], bounds[1]


def _side_path(out: Path, suffix: str) -> Path:
    return out.with_name(out.name + suffix)


def _read_partial(
    path: Path, model_name: str, settings: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Finished rows of an interrupted run with the same model and settings; a line cut short
    by the interruption is ignored (that row is simply transcribed again)."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and "id" in record
                and record.get("asr") == model_name
                and record.get("settings") == settings
            ):
                done[str(record["id"])] = record
    return done


def _relocate(df: pd.DataFrame, out: Path) -> None:
    """Rewrite relative media paths so they resolve from ``out``'s folder as they did from the
    input manifest's."""
    source = Path(df.attrs["path"]).parent.resolve()
    target = out.parent.resolve()
    if source == target:
        return
    for column in ("audio", "video"):
        df[column] = [
            v if not v or Path(v).is_absolute() else os.path.relpath(source / v, target)
            for v in df[column]
        ]


def transcribe_manifest(
    manifest: str | Path,
    out: str | Path,
    model: str | Path | None = None,
    only_empty: bool = True,
    language: str | None = "en",
    beam_size: int = 1,
    device: str = "cpu",
    compute_type: str = "int8",
    progress: bool = True,
    vad_filter: bool = True,
) -> TranscriptionSummary:
    """Write a copy of ``manifest`` to ``out`` (CSV or JSONL by suffix) with ASR transcripts.

    Rows with an empty ``text`` (every row when ``only_empty`` is False) that have audio, or a
    video with a soundtrack, are transcribed: ``text`` is set, ``words`` holds a JSON list of
    ``[word, start, end]`` (seconds from the segment start) and ``asr`` names the model. A row
    whose audio is missing or unreadable keeps its text, is listed in the summary and in
    ``<out>.errors.jsonl``, and the run goes on. A row without speech gets an empty text.

    Finished rows go to ``<out>.partial.jsonl`` as they finish, so an interrupted run picks up
    where it stopped; that file is removed once ``out`` has been written. The input manifest is
    never modified. ``model`` is a faster-whisper model folder; None uses the bundled tiny.en.
    ``vad_filter`` runs Silero VAD first so non-speech stretches give no (hallucinated) text.
    """
    began = time.perf_counter()
    manifest, out = Path(manifest), Path(out)
    if out.suffix not in (".csv", ".jsonl"):
        raise DataError(f"output manifest {out}: suffix must be .csv or .jsonl")
    if out.resolve() == manifest.resolve():
        raise DataError(f"output manifest {out} is the input manifest; write to another file")
    if beam_size < 1:
        raise DataError(f"beam_size must be at least 1, got {beam_size}")
    check_installed()
    folder, model_name = model_dir(model)
    model_name = describe_model(model_name, folder, language)
    df = read_manifest(manifest)
    for column in ("words", "asr", "asr_note"):
        if column not in df.columns:
            df[column] = ""

    todo = [idx for idx, text in df["text"].items() if not only_empty or not str(text).strip()]
    summary = TranscriptionSummary(output=out, model=model_name, kept=len(df) - len(todo))
    partial_path = _side_path(out, ".partial.jsonl")
    # what changes the text; a partial file made with other settings is not reused
    settings = {"language": language, "beam_size": beam_size, "vad_filter": vad_filter}
    done = _read_partial(partial_path, model_name, settings)

    loaded: list[Any] = []

    def whisper() -> Any:
        if not loaded:
            loaded.append(build_model(folder, device, compute_type))
        return loaded[0]

    report: Callable[[int], None] = _progress(len(todo), began) if progress else lambda _: None
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    with open(partial_path, "a", encoding="utf-8") as partial:
        for count, idx in enumerate(todo, 1):
            row = df.loc[idx]
            uid = str(row["id"])
            record = done.get(uid)
            if record is not None:
                summary.reused += 1
            else:
                try:
                    record = _transcribe_row(
                        df, row, whisper, language, beam_size, vad_filter, summary
                    )
                except AudioError as exc:
                    summary.failures.append((uid, str(exc)))
                    report(count)
                    continue
                record.update(id=uid, asr=model_name, settings=settings)
                partial.write(json.dumps(record, ensure_ascii=False) + "\n")
                partial.flush()
                summary.transcribed += 1
            if not record["text"] and not record.get("note"):
                summary.silent += 1
            df.at[idx, "text"] = record["text"]
            df.at[idx, "words"] = json.dumps(record["words"], ensure_ascii=False)
            df.at[idx, "asr"] = model_name
            df.at[idx, "asr_note"] = record.get("note", "")
            if record.get("note"):
                summary.refused += 1
            report(count)

    _relocate(df, out)
    write_manifest(df, out)
    _write_errors(_side_path(out, ".errors.jsonl"), summary.failures)
    partial_path.unlink(missing_ok=True)
    summary.wall_seconds = time.perf_counter() - began
    if progress:
        print(summary, file=sys.stderr)
    return summary


def _transcribe_row(
    df: pd.DataFrame,
    row: pd.Series,
    whisper: Callable[[], Any],
    language: str | None,
    beam_size: int,
    vad_filter: bool,
    summary: TranscriptionSummary,
) -> dict[str, Any]:
    """Raises AudioError (naming the file and the reason) for a row that cannot be used."""
    media_column = "audio" if str(row["audio"]) else "video" if str(row["video"]) else ""
    if not media_column:
        raise AudioError("no audio or video to transcribe")
    start, end = _segment(row, media_column)
    signal = load_audio(resolve_media(df, str(row[media_column])), start, end)
    summary.audio_seconds += len(signal) / SAMPLE_RATE
    if not np.isfinite(signal).all():
        raise AudioError(f"{row[media_column]}: audio holds NaN or infinite samples")
    if float(np.abs(signal).max()) < SILENCE_PEAK:
        return {"text": "", "words": [], "seconds": round(len(signal) / SAMPLE_RATE, 3)}
    tick = time.perf_counter()
    text, words, note = run_model(whisper(), signal, language, beam_size, vad_filter)
    summary.model_seconds += time.perf_counter() - tick
    seconds = round(len(signal) / SAMPLE_RATE, 3)
    return {"text": text, "words": words, "seconds": seconds, "note": note}


def _write_errors(path: Path, failures: list[tuple[str, str]]) -> None:
    """One JSON line per failed row; an old report from an earlier run is replaced or removed,
    so the file always describes the manifest next to it."""
    if not failures:
        path.unlink(missing_ok=True)
        return
    lines = (
        json.dumps({"id": uid, "reason": reason}, ensure_ascii=False) for uid, reason in failures
    )
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def _progress(total: int, began: float) -> Callable[[int], None]:
    last = [began]

    def report(count: int) -> None:
        now = time.perf_counter()
        if count == total or now - last[0] >= _PROGRESS_EVERY_S:
            last[0] = now
            print(f"transcribe: {count}/{total} rows, {now - began:.0f} s", file=sys.stderr)

    return report
