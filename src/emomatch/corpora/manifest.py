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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emomatch.corpora.textfile import not_utf8, read_csv_table, read_text, summarize
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


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: columns read as numbers (seconds); every other column is read as text
NUMBER_COLUMNS = ("start", "end")


def read_manifest(
    path: str | Path, defaults: Mapping[str, str] | None = None, complete: bool = True
) -> pd.DataFrame:
    """Read a CSV or JSONL manifest; a ``_line`` column keeps each row's (first) line in the file.

    ``defaults``: standard columns the file may lack, with the value every row then gets (e.g.
    ``{"split": ""}`` where the caller assigns splits itself, as ``emomatch import`` does).

    Everything else is text exactly as written (no ``NA`` guessing, spaces kept); ``start`` and
    ``end`` are numbers (NaN where empty). A file that cannot be read as a manifest (not UTF-8,
    a broken CSV quote or JSON line, a row with more or fewer fields than the header, a start or
    end that is not a finite number, no rows at all) is one :class:`DataError` that lists the
    offending lines and fields: nothing is dropped or altered silently.

    ``complete=False`` (a manifest of clips to predict) needs only ``id`` and one of ``audio``,
    ``video``, ``text``: the other columns are added empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    if path.suffix == ".jsonl":
        columns, records = _jsonl_records(path)
    else:
        columns, records = _csv_records(path)
    needed = MANIFEST_COLUMNS if complete else ("id",)
    missing = [c for c in needed if c not in columns and c not in (defaults or {})]
    if not complete and not missing and not {"audio", "video", "text"} & set(columns):
        missing = ["audio, video or text"]
    if missing:
        raise DataError(
            f"manifest {path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'})"
        )
    if "_line" in columns:
        raise DataError(f"manifest {path}: column _line is reserved for the reader")
    if not records:
        raise DataError(f"manifest {path}: no rows (a header only); nothing to extract")
    problems: list[tuple[int, str]] = []
    data: dict[str, list[Any]] = {}
    for column in columns:
        values = [record.get(column) for _, record in records]
        if column in NUMBER_COLUMNS:
            numbers = []
            for (line, _), value in zip(records, values, strict=True):
                number, why = _seconds(value)
                if why is not None:
                    problems.append((line, f"line {line}, {column}: {why}"))
                numbers.append(number)
            data[column] = numbers
        else:
            data[column] = [v if isinstance(v, str) else _text(v) for v in values]
    if problems:
        raise DataError(f"manifest {path}: {summarize([p for _, p in sorted(problems)])}")
    for column, value in (defaults or {}).items():
        if column not in data:
            data[column] = [value] * len(records)
    data["_line"] = [line for line, _ in records]
    for column in MANIFEST_COLUMNS:
        if column not in data:  # only where ``complete`` is False
            data[column] = [math.nan if column in NUMBER_COLUMNS else ""] * len(records)
    df = pd.DataFrame(data)
    for column in NUMBER_COLUMNS:
        df[column] = df[column].astype("float64")
    df.attrs["path"] = str(path)
    return df


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _seconds(value: Any) -> tuple[float, str | None]:
    """(seconds, None) or (NaN, why not); empty means no segment (NaN, None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan, None
    # as the file has it: JSON's true, not Python's True; long values cut
    shown = value if isinstance(value, str) else json.dumps(value)
    shown = repr(shown if len(shown) <= 40 else f"{shown[:40]}...")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return math.nan, f"{shown} is not a number of seconds"
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return math.nan, f"{shown} is not a number of seconds"
    if not math.isfinite(number):
        return math.nan, f"{shown} is not a finite number of seconds"
    return number, None


def _csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    table = read_csv_table(path, "manifest")
    problems = table.encoding_problems()
    width = len(table.header)
    for line, record in table.records:
        if len(record) != width:
            problems.append(
                f"line {line}: {len(record)} fields, the header has {width} "
                "(an unquoted comma or a missing field?)"
            )
    if problems:
        raise DataError(f"manifest {path}: {summarize(problems)}")
    records = [
        (line, dict(zip(table.header, record, strict=True))) for line, record in table.records
    ]
    return table.header, records


def _jsonl_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    text = read_text(path, "manifest")
    # One scan of the file instead of one per value; a surrogate may also come from an escape.
    utf8 = not_utf8(text) is None and _SURROGATE_ESCAPE.search(text) is None
    columns: dict[str, None] = {}
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    # JSON strings cannot hold a raw newline, so "\n" alone separates records (U+2028 may not).
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            bad = not_utf8(raw)
            problems.append(f"line {line}: {bad or f'not valid JSON ({exc})'}")
            continue
        except RecursionError:
            problems.append(f"line {line}: JSON nested too deeply")
            continue
        if not isinstance(value, dict):
            problems.append(f"line {line}: a JSON {type(value).__name__}, expected an object")
            continue
        for key, item in value.items() if not utf8 else ():
            bad = not_utf8(key) or not_utf8(_text(item))
            if bad is not None:
                problems.append(
                    f"line {line}, {key if not_utf8(key) is None else repr(key)}: {bad}"
                )
                break
        columns.update(dict.fromkeys(value))
        records.append((line, value))
    if problems:
        raise DataError(f"manifest {path}: {summarize(problems)}")
    return list(columns), records


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return False
    if isinstance(value, float):
        return math.isnan(value)
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _csv_cell(value: Any) -> str:
    text = value if isinstance(value, str) else "" if _missing(value) else _text(value)
    # A lone "\r" must be quoted too, or a reader splits the row there (pandas leaves it bare).
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically as CSV or JSONL (by suffix); standard columns first. What
    :func:`read_manifest` gives back is the same rows: text cells unchanged, numbers as text
    (``str``), NaN and None as empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [
        *MANIFEST_COLUMNS,
        *[c for c in df.columns if c not in MANIFEST_COLUMNS and c != "_line"],
    ]
    out = df.reindex(columns=cols)
    # column by column as Python values: far faster than a cell-by-cell walk of the frame
    columns = [out[c].tolist() for c in cols]
    if path.suffix == ".jsonl":
        keys = [str(c) for c in cols]
        lines = [
            json.dumps(
                {k: None if _missing(v) else v for k, v in zip(keys, row, strict=True)},
                ensure_ascii=False,
                default=str,
            )
            for row in zip(*columns, strict=True)
        ]
    else:
        cells = [[_csv_cell(v) for v in column] for column in columns]
        lines = [",".join(_csv_cell(str(c)) for c in cols)]
        lines += [",".join(row) for row in zip(*cells, strict=True)]
    text = "".join(f"{line}\n" for line in lines)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"manifest {path}: {_unwritable(out)}") from None
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _unwritable(df: pd.DataFrame) -> str:
    """The first cell that cannot be written as UTF-8 (e.g. a file name that was not UTF-8)."""
    for column in df.columns:
        for uid, value in zip(df["id"], df[column], strict=True):
            why = not_utf8(_text(value)) or not_utf8(str(column))
            if why is not None:
                return f"id {_text(uid)!r}, {column}: {why}"
    return "text that cannot be written as UTF-8"


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
