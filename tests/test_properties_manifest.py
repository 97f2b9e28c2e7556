"""Property-based tests of the manifest reader and writer (CSV and JSONL).

Every input ends in a table or in one DataError that names the file (and the line and field
where one is to blame); what write_manifest writes, read_manifest gives back unchanged.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from emomatch.corpora.manifest import (
    MANIFEST_COLUMNS,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from emomatch.errors import DataError
from tests.support.property_helpers import plain_cell, scratch

SUFFIXES = ("csv", "jsonl")
HEADER = ",".join(MANIFEST_COLUMNS)

# Any text a cell can hold: commas, quotes, CR/LF, NUL, a BOM character, U+2028 ... but no
# lone surrogates (not writable as UTF-8; tested on their own below).
cell_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
seconds = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))
extra_name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda n: n == n.strip() and n not in MANIFEST_COLUMNS and n != "_line"
)


def read_or_clear_error(path: Path) -> pd.DataFrame | None:
    """The property every reader test checks: a table, or one DataError naming the file."""
    try:
        return read_manifest(path)
    except DataError as exc:
        message = str(exc)
        assert str(path) in message
        assert "Traceback" not in message
        message.encode("utf-8")  # printable: no stray surrogate from the file's bytes
        return None


@st.composite
def manifests(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 6))
    names = draw(st.lists(extra_name, max_size=3, unique=True))
    data: dict[str, list[Any]] = {
        c: draw(st.lists(cell_text, min_size=n, max_size=n))
        for c in MANIFEST_COLUMNS
        if c not in ("start", "end")
    }
    for c in ("start", "end"):
        data[c] = draw(st.lists(seconds, min_size=n, max_size=n))
    for name in names:
        data[name] = draw(st.lists(cell_text, min_size=n, max_size=n))
    if draw(st.booleans()):
        # numbers in a text column come back as their text ("3"), as writers like IEMOCAP's give
        data["session"] = draw(st.lists(st.integers(-(10**12), 10**12), min_size=n, max_size=n))
    return pd.DataFrame(data)


def expected_text(value: Any) -> str:
    return "" if value is None else str(value)


def assert_same_rows(original: pd.DataFrame, back: pd.DataFrame) -> None:
    assert len(back) == len(original)
    for column in original.columns:
        for want, got in zip(original[column], back[column], strict=True):
            if column in ("start", "end"):
                if want is None or (isinstance(want, float) and math.isnan(want)):
                    assert math.isnan(got)
                else:
                    assert got == float(want)
            else:
                assert got == expected_text(want)


@given(df=manifests(), suffix=st.sampled_from(SUFFIXES))
def test_written_manifest_reads_back_unchanged(df: pd.DataFrame, suffix: str) -> None:
    with scratch() as folder:
        path = write_manifest(df, folder / f"m.{suffix}")
        back = read_manifest(path)
    assert list(back.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert_same_rows(df, back)
    # each row's line is where it starts in the file, in order
    assert back["_line"].is_monotonic_increasing and back["_line"].is_unique


@given(df=manifests(), bom=st.booleans(), newline=st.sampled_from(["\r\n", "\r", "\n"]))
def test_bom_and_line_endings_do_not_change_the_rows(
    df: pd.DataFrame, bom: bool, newline: str
) -> None:
    # Rewriting the line endings of a file would also rewrite those inside quoted cells.
    df = df[[c for c in df.columns if "\r" not in c and "\n" not in c]]
    df = df.map(lambda v: v.replace("\r", " ").replace("\n", " ") if isinstance(v, str) else v)
    with scratch() as folder:
        path = write_manifest(df, folder / "m.csv")
        text = path.read_bytes().decode("utf-8").replace("\n", newline)
        path.write_bytes((codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8"))
        back = read_manifest(path)
    assert_same_rows(df, back)


@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
@example(data=b"", suffix="csv")
@example(data=b"\xef\xbb\xbf", suffix="csv")
@example(data=b'id,audio\n"a\n', suffix="csv")
@example(data=b"[1, 2]\n", suffix="jsonl")
@example(data=b"[" * 5000, suffix="jsonl")
@example(data=b'{"id": ' + b"9" * 5000 + b"}\n", suffix="jsonl")
def test_random_bytes_give_a_table_or_one_clear_error(data: bytes, suffix: str) -> None:
    with scratch() as folder:
        path = folder / f"m.{suffix}"
        path.write_bytes(data)
        read_or_clear_error(path)


def _insert(data: bytes, at: int, what: bytes) -> bytes:
    at = at % (len(data) + 1)
    return data[:at] + what + data[at:]


MUTATIONS: dict[str, Callable[[bytes, int, bytes], bytes]] = {
    "truncate": lambda d, at, _: d[: at % (len(d) + 1)],
    "insert": _insert,
    "drop byte": lambda d, at, _: d[: at % (len(d) + 1)] + d[at % (len(d) + 1) + 1 :],
    "duplicate line": lambda d, at, _: b"\n".join(
        (lines := d.split(b"\n"))[: at % len(lines) + 1] + lines[at % len(lines) :]
    ),
    "crlf": lambda d, at, _: d.replace(b"\n", b"\r\n"),
    "cr": lambda d, at, _: d.replace(b"\n", b"\r"),
    "bom": lambda d, at, _: codecs.BOM_UTF8 + d,
    "latin-1": lambda d, at, _: d.decode("utf-8", "replace").encode("latin-1", "replace"),
    "utf-16": lambda d, at, _: d.decode("utf-8", "replace").encode("utf-16"),
}
# what an inserted piece is made of: quotes, separators, line breaks, bytes that are not UTF-8,
# numbers that are not finite, JSON punctuation
PIECES = st.one_of(
    st.sampled_from(
        [
            b'"',
            b",",
            b"\n",
            b"\r",
            b"\r\n",
            b"\xff",
            b"\xe9",
            b"\x00",
            b"nan",
            b"inf",
            b"-1e999",
            b"1" * 400,
            b"{",
            b"}",
            b"[",
            b":",
            b"null",
            b'"start": "x"',
            b",,,,",
        ]
    ),
    st.binary(min_size=1, max_size=6),
)


@given(
    df=manifests(),
    suffix=st.sampled_from(SUFFIXES),
    mutation=st.lists(
        st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 10**6), PIECES),
        min_size=1,
        max_size=3,
    ),
)
def test_damaged_manifest_gives_a_table_or_one_clear_error(
    df: pd.DataFrame, suffix: str, mutation: list[tuple[str, int, bytes]]
) -> None:
    with scratch() as folder:
        path = write_manifest(df, folder / f"m.{suffix}")
        data = path.read_bytes()
        for name, at, piece in mutation:
            data = MUTATIONS[name](data, at, piece)
        path.write_bytes(data)
        back = read_or_clear_error(path)
    if back is not None:
        # what was read is a usable table: the columns the rest relies on, numbers finite
        assert set(MANIFEST_COLUMNS) <= set(back.columns)
        for column in ("start", "end"):
            assert all(math.isnan(v) or math.isfinite(v) for v in back[column])
        validate_manifest(back, check_files=False)


# --- the failures issue 8 found, and the cases around them -------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_header_only_or_empty_manifest_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m.{suffix}"
    path.write_text(HEADER + "\n" if suffix == "csv" else "\n\n")
    with pytest.raises(DataError, match="no rows" if suffix == "csv" else "missing column"):
        read_manifest(path)
    path.write_text("")
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_manifest(path)


@given(
    rows=st.lists(
        plain_cell,
        min_size=1,
        max_size=6,
    ),
    bad=st.data(),
)
def test_a_row_that_is_not_utf8_is_named_by_line_and_field(
    rows: list[str], bad: st.DataObject
) -> None:
    which = bad.draw(st.integers(0, len(rows) - 1))
    column = bad.draw(st.sampled_from(["text", "speaker", "id"]))
    lines = [HEADER.encode()]
    for i, text in enumerate(rows):
        cells = {c: b"" for c in MANIFEST_COLUMNS}
        cells.update(id=f"u{i}".encode(), text=text.encode(), split=b"train")
        if i == which:
            cells[column] = cells[column] + "café".encode("cp1252")
        lines.append(b",".join(cells[c] for c in MANIFEST_COLUMNS))
    with scratch() as folder:
        path = folder / "m.csv"
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(DataError) as caught:
            read_manifest(path)
    message = str(caught.value)
    assert f"line {which + 2}, {column}: byte 0xe9 is not UTF-8" in message
    assert str(path) in message


def test_every_bad_line_is_listed_in_the_one_error(tmp_path: Path) -> None:
    texts = ["ok", "caf\xe9"]
    rows = [f"u{i},,,{texts[i % 2]},,,s,,train" for i in range(20)]
    path = tmp_path / "m.csv"
    path.write_bytes((HEADER + "\n" + "\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"line 3, text: .*line 5, text: .* and 5 more"):
        read_manifest(path)


@given(
    value=st.one_of(
        st.sampled_from(
            [
                "nan",
                "NaN",
                "inf",
                "-inf",
                "Infinity",
                "1e999",
                "-1e400",
                "abc",
                "1,5",
                "0x10",
                "1e308",
                "  2.5 ",
                "",
                "1_000",
                "٣",
            ]
        ),
        st.text(max_size=6),
    ),
    suffix=st.sampled_from(SUFFIXES),
    column=st.sampled_from(["start", "end"]),
)
def test_start_and_end_are_finite_numbers_or_the_line_is_named(
    value: str, suffix: str, column: str
) -> None:
    df = pd.DataFrame([{c: "" for c in MANIFEST_COLUMNS} | {"id": "a", "text": "t"}])
    df[column] = [value]
    with scratch() as folder:
        path = write_manifest(df, folder / f"m.{suffix}")
        try:
            back = read_manifest(path)
        except DataError as exc:
            assert f"line {1 if suffix == 'jsonl' else 2}, {column}:" in str(exc)
            return
    got = back[column].iloc[0]
    assert math.isnan(got) if not value.strip() else math.isfinite(got) and got == float(value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "a", "start": true}', "start: 'true' is not a number"),
        ('{"id": "a", "start": 1e999}', "is not a finite number"),
        ('{"id": "a", "start": NaN}', "is not a finite number"),
        ('{"id": "a", "start": [1]}', "is not a number"),
        ("[1, 2]", "a JSON list, expected an object"),
        ('{"id": "a"', "not valid JSON"),
        ('{"id": "\\udc80"}', "id: byte 0x80 is not UTF-8"),
    ],
)
def test_bad_jsonl_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "m.jsonl"
    good = '{"id": "b", "audio": "", "video": "", "text": "x", "start": null, "end": null, '
    good += '"speaker": "", "label": "", "split": "train"}'
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=rf"line 3[,:] .*{re.escape(problem)}"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (HEADER + "\na,,,x,,,s,,train,extra\n", "line 2: 10 fields, the header has 9"),
        (HEADER + "\na,,,x,,,s\n", "line 2: 7 fields, the header has 9"),
        (HEADER + '\na,,,"never closed,,,s,,train\n', "line 2: cannot be parsed as CSV"),
        (HEADER + '\na,,,"x"y,,,s,,train\n', "line 2: cannot be parsed as CSV"),
        (HEADER + ",id\na,,,x,,,s,,train,b\n", "column 'id' appears twice"),
        (HEADER + ",\na,,,x,,,s,,train,\n", "column 10 has no name"),
        ("id,audio,text\na,,x\n", "missing column(s) video, start, end, speaker, label, split"),
        (HEADER + ",_line\na,,,x,,,s,,train,3\n", "_line is reserved"),
    ],
)
def test_bad_csv_structure_is_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(problem)):
        read_manifest(path)


def test_multiline_cells_keep_true_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(HEADER + '\na,,,"two\nlines",,,s,,train\nb,,,x,2,1,s,,train\n')
    df = read_manifest(path)
    assert list(df["_line"]) == [2, 4]
    problems = validate_manifest(df, check_files=False)
    assert [(p.line, p.column) for p in problems] == [(4, "end")]


def test_text_that_cannot_be_utf8_is_refused_when_written(tmp_path: Path) -> None:
    # e.g. a clip whose file name is not UTF-8 (Python keeps its bytes as surrogates)
    row = {c: "" for c in MANIFEST_COLUMNS} | {"id": "a", "audio": "x\udce9.wav"}
    # object columns: pandas' default (Arrow) strings refuse surrogates before the writer can
    df = pd.DataFrame([row], dtype=object)
    for suffix in SUFFIXES:
        with pytest.raises(DataError, match=r"id 'a', audio: byte 0xe9 is not UTF-8"):
            write_manifest(df, tmp_path / f"m.{suffix}")
        assert not (tmp_path / f"m.{suffix}").exists()


def test_cells_larger_than_the_csv_modules_default_limit_read_back(tmp_path: Path) -> None:
    # e.g. the word timings of an hour of speech in the words column emomatch transcribe writes
    words = "[" + ", ".join(f'["w{i}", {i}.0, {i}.5]' for i in range(20000)) + "]"
    df = pd.DataFrame([{c: "" for c in MANIFEST_COLUMNS} | {"id": "a", "words": words}])
    for suffix in SUFFIXES:
        back = read_manifest(write_manifest(df, tmp_path / f"m.{suffix}"))
        assert back["words"].iloc[0] == words and len(words) > 2**17
