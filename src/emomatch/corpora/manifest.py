"""The manifest: one row per utterance, the data contract between corpus readers and extraction.

Columns ``id, audio, video, text, start, end, speaker, label, split``; any of audio/video/text
may be empty, an empty label means unlabeled, ``start``/``end`` (seconds) cut a segment out of a
longer file and are empty for whole files. Extra columns (fold fields such as ``fold_1``, a
``crop`` for IEMOCAP's side-by-side video, a dialog id, ...) are kept. Stored as CSV or JSONL
(by file suffix); relative media paths resolve against the manifest's folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from emomatch.errors import DataError
from emomatch.files import atomic_path

MANIFEST_COLUMNS = ("id", "audio", "video", "text", "start", "end", "speaker", "label", "split")
MEDIA_COLUMNS = ("audio", "video")


@dataclass(frozen=True)
class ManifestProblem:
    line: int
    id: str
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line} (id {self.id!r}), {self.column}: {self.message}"


def _first_line(path: Path) -> int:
    """Line number of the first data row: after the header for CSV, 1 for JSONL."""
    return 1 if path.suffix == ".jsonl" else 2


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a CSV or JSONL manifest; a ``_line`` column keeps each row's line in the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    try:
        if path.suffix == ".jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except ValueError as exc:
        raise DataError(f"manifest {path}: cannot be parsed ({exc})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"manifest {path}: missing column(s) {', '.join(missing)}")
    for col in df.columns:
        if col not in ("start", "end"):
            df[col] = df[col].map(
                lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            )
    for col in ("start", "end"):
        df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce")
    df["_line"] = range(_first_line(path), _first_line(path) + len(df))
    df.attrs["path"] = str(path)
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically as CSV or JSONL (by suffix); standard columns first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [
        *MANIFEST_COLUMNS,
        *[c for c in df.columns if c not in MANIFEST_COLUMNS and c != "_line"],
    ]
    out = df.reindex(columns=cols)
    with atomic_path(path) as tmp:
        if path.suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in out.to_dict(orient="records"):
                    clean = {
                        k: (None if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in record.items()
                    }
                    fh.write(json.dumps(clean, ensure_ascii=False) + "\n")
        else:
            out.to_csv(tmp, index=False, encoding="utf-8")
    return path


def resolve_media(df: pd.DataFrame, value: str) -> Path:
    p = Path(value)
    if p.is_absolute() or "path" not in df.attrs:
        return p
    return Path(df.attrs["path"]).parent / p


def validate_manifest(
    df: pd.DataFrame,
    classes: Iterable[str] | None = None,
    check_files: bool = True,
) -> list[ManifestProblem]:
    """Every problem of every row (never just the first): missing media file, end before
    start, unknown label, duplicate id, a row with no modality at all."""
    problems: list[ManifestProblem] = []
    known = set(classes) if classes is not None else None
    lines = (
        df["_line"] if "_line" in df.columns else pd.Series(range(2, len(df) + 2), index=df.index)
    )
    seen: dict[str, int] = {}
    for idx, row in df.iterrows():
        line, uid = int(lines[idx]), str(row["id"])

        def add(column: str, message: str, line: int = line, uid: str = uid) -> None:
            problems.append(ManifestProblem(line, uid, column, message))

        if not uid:
            add("id", "empty id")
        elif uid in seen:
            add("id", f"duplicate id (first on line {seen[uid]})")
        else:
            seen[uid] = line
        if not any(str(row[c]) for c in ("audio", "video", "text")):
            add("audio", "no audio, video or text")
        if check_files:
            for col in MEDIA_COLUMNS:
                value = str(row[col])
                if value and not resolve_media(df, value).is_file():
                    add(col, f"file {value} does not exist")
        start, end = row["start"], row["end"]
        has_start = not pd.isna(start)
        has_end = not pd.isna(end)
        if has_start and start < 0:
            add("start", f"negative start {start}")
        if has_start and has_end and end <= start:
            add("end", f"end {end} is not after start {start}")
        if has_start != has_end:
            add("start" if not has_start else "end", "start and end must be given together")
        label = str(row["label"])
        if label and known is not None and label not in known:
            add("label", f"unknown label {label!r} (classes: {', '.join(sorted(known))})")
    return problems
