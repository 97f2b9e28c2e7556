"""Any folder of clips, with an optional transcript CSV: the way most users start.

Every media file below ``root`` becomes one utterance. Its id is the path relative to ``root``
without the suffix (``spk1/clip03``); an audio file and a video file with the same id (``a.wav``
next to ``a.mp4``) make one utterance with both. The speaker is the first folder below ``root``
(clips lying directly in ``root`` get speaker ``unknown``).

The transcript CSV (``transcripts=PATH``) has a column ``id`` (the id above, or the file name
with or without its suffix) and ``text``; optional columns ``label``, ``speaker``, ``split``,
``start``, ``end`` and any others, which are kept. Rows are split ``split`` where the CSV says
so, else ``train`` when labeled and ``unlabeled`` when not.
"""

from __future__ import annotations

import csv
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
from emomatch.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus")


def _read_transcripts(path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    if not path.is_file():
        raise DataError(f"transcript file {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for needed in ("id", "text"):
            if needed not in columns:
                raise DataError(
                    f"{path}: no {needed!r} column (found: {', '.join(columns) or 'nothing'})"
                )
        rows: dict[str, dict[str, str]] = {}
        problems = []
        for line, row in enumerate(reader, start=2):
            key = (row.get("id") or "").strip()
            if not key:
                problems.append(f"{path}:{line}: empty id, row skipped")
            elif key in rows:
                problems.append(f"{path}:{line}: duplicate id {key!r}, row skipped")
            else:
                rows[key] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    return rows, problems


def read_folder(
    root: Path, out: Path, transcripts: str | None = None, absolute_paths: bool | str = False
) -> PreparedCorpus:
    """Write ``out/manifest.csv`` for every clip below ``root``."""
    root, out = Path(root), Path(out)
    absolute = flag_option(absolute_paths, "folder", "absolute_paths")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of clips")
    media: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        suffix = path.suffix.lower()
        kind = "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else ""
        if not kind or not path.is_file() or path.name.startswith("."):
            continue
        uid = path.relative_to(root).with_suffix("").as_posix()
        media.setdefault(uid, {})[kind] = path
    if not media:
        looked = ", ".join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)
        raise DataError(f"{root}: no audio or video files (looked for {looked})")
    texts: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    if transcripts:
        texts, problems = _read_transcripts(Path(transcripts))
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
            problems.append(f"{uid}: no line in {transcripts}, text left empty")
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
