"""Any folder of clips, with an optional transcript CSV: the way most users start.

Every media file below ``root`` becomes one utterance. Its id is the path relative to ``root``
without the suffix (``spk1/clip03``); an audio file and a video file with the same id (``a.wav``
next to ``a.mp4``) make one utterance with both. The speaker is the first folder below ``root``
(clips lying directly in ``root`` get speaker ``unknown``).

The transcript CSV (``transcripts=PATH``) has a column ``id`` (the id above, or the file name
with or without its suffix) and ``text``; optional columns ``label``, ``speaker``, ``split``,
``start``, ``end`` and any others, which are kept. Rows are split ``split`` where the CSV says
so, else ``train`` when labeled and ``unlabeled`` when not. A labels CSV (``labels=PATH``) is
the same file with ``id`` and ``label`` required and ``text`` optional; ``text=false`` makes
``text`` optional in a transcript CSV too (a store without lexical features needs none).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from emomatch.corpora.base import (
    CORPORA,
    PreparedCorpus,
    check_options,
    flag_option,
    media_path,
)
from emomatch.corpora.manifest import MANIFEST_COLUMNS, write_manifest
from emomatch.corpora.textfile import not_utf8, read_csv_table, summarize
from emomatch.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")


def read_transcripts(
    path: Path, required: tuple[str, ...] = ("id", "text"), what: str = "transcript file"
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """id -> row of the transcript (or labels) CSV, and one problem line per row skipped.

    A file that cannot be read as a whole (not UTF-8, a broken quote, no column of
    ``required``) is an error naming the file and line; a bad row (empty or repeated id, wrong
    number of fields, a start/end that is not a number) is skipped and reported with its line."""
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    table = read_csv_table(path, what)
    for needed in required:
        if needed not in table.header:
            raise DataError(
                f"{what} {path}: no {needed!r} column (found: {', '.join(table.header)})"
            )
    bad_text = table.encoding_problems()
    if bad_text:
        raise DataError(f"{what} {path}: {summarize(bad_text)}")
    rows: dict[str, dict[str, str]] = {}
    problems = []
    if not table.records:
        problems.append(f"{path}: a header only, no transcripts")
    for line, record in table.records:
        where = f"{path}:{line}"
        if len(record) != len(table.header):
            problems.append(
                f"{where}: {len(record)} fields, the header has {len(table.header)}; row skipped"
            )
            continue
        row = {k: v.strip() for k, v in zip(table.header, record, strict=True)}
        key = row["id"]
        numbers = [(c, row[c]) for c in ("start", "end") if row.get(c)]
        wrong = [(c, v) for c, v in numbers if not _is_seconds(v)]
        if not key:
            problems.append(f"{where}: empty id, row skipped")
        elif key in rows:
            problems.append(f"{where}: duplicate id {key!r}, row skipped")
        elif wrong:
            column, value = wrong[0]
            problems.append(f"{where}: {column} {value!r} is not a number of seconds, row skipped")
        else:
            rows[key] = row
    return rows, problems


def _is_seconds(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def read_folder(
    root: Path,
    out: Path,
    transcripts: str | None = None,
    absolute_paths: bool | str = False,
    labels: str | None = None,
    text: bool | str = True,
) -> PreparedCorpus:
    """Write ``out/manifest.csv`` for every clip below ``root``."""
    root, out = Path(root), Path(out)
    absolute = flag_option(absolute_paths, "folder", "absolute_paths")
    if transcripts and labels:
        raise DataError("give a transcript CSV or a labels CSV, not both (one file holds both)")
    if labels:
        required: tuple[str, ...] = ("id", "label")
        transcripts, what = labels, "labels file"
    else:
        required = ("id", "text") if flag_option(text, "folder", "text") else ("id",)
        what = "transcript file"
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of clips")
    media: dict[str, dict[str, Path]] = {}
    skipped_names: list[str] = []
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else ""
        if not kind or not path.is_file() or path.name.startswith("."):
            continue
        # A name that is not UTF-8 cannot go into the manifest (which is UTF-8 text).
        bad_name = not_utf8(str(path.relative_to(root)))
        if bad_name is not None:
            shown = str(path.relative_to(root)).encode("utf-8", "backslashreplace").decode()
            skipped_names.append(f"{root}/{shown}: file name: {bad_name}; clip skipped")
            continue
        uid = path.relative_to(root).with_suffix("").as_posix()
        media.setdefault(uid, {})[kind] = path
    if not media:
        looked = ", ".join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)
        unusable = f"; {'; '.join(skipped_names[:3])}" if skipped_names else ""
        raise DataError(f"{root}: no audio or video files (looked for {looked}){unusable}")
    texts: dict[str, dict[str, str]] = {}
    problems: list[str] = list(skipped_names)
    if transcripts:
        texts, found = read_transcripts(Path(transcripts), required, what)
        problems += found
    used: set[str] = set()
    rows = []
    for uid, files in media.items():
        name = uid.rsplit("/", 1)[-1]
        keys = [uid, name, *(p.name for p in files.values())]
        key = next((k for k in keys if k in texts), None)
        extra = texts.get(key, {}) if key is not None else {}
        if key is not None:
            used.add(key)
        elif transcripts:
            missing = "unlabelled" if labels else "text left empty"
            problems.append(f"{uid}: no line in {transcripts}, {missing}")
        video = files.get("video")
        # A video's soundtrack is its audio unless a separate audio file is there.
        audio = files.get("audio", video)
        label = extra.get("label", "")
        row: dict[str, Any] = {
            **{k: v for k, v in extra.items() if k not in ("id", "text")},
            "id": uid,
            "audio": media_path(audio, out, absolute) if audio else "",
            "video": media_path(video, out, absolute) if video else "",
            "text": extra.get("text", ""),
            "start": extra.get("start", ""),
            "end": extra.get("end", ""),
            "speaker": extra.get("speaker") or (uid.split("/")[0] if "/" in uid else "unknown"),
            "label": label,
            "split": extra.get("split") or ("train" if label else "unlabeled"),
        }
        rows.append(row)
    for key in sorted(set(texts) - used):
        problems.append(f"{transcripts}: id {key!r} matches no clip below {root}")
    df = pd.DataFrame(rows)
    df = df[[*MANIFEST_COLUMNS, *[c for c in df.columns if c not in MANIFEST_COLUMNS]]]
    manifest = write_manifest(df, out / "manifest.csv")
    classes = sorted({r["label"] for r in rows if r["label"]})
    return PreparedCorpus(
        manifest=manifest,
        rows=len(rows),
        classes=classes,
        problems=problems,
        counts={"split": df["split"].value_counts().to_dict()},
    )


@CORPORA.register("folder")
def folder_corpus(root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """The registry's entry: :func:`read_folder` with options checked by name."""
    check_options("folder", read_folder, options)
    return read_folder(root, out, **options)
