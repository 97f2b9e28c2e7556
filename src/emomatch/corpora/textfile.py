"""Reading the text files users hand to emomatch (manifests, transcript CSVs).

Bytes that are not UTF-8 are kept as surrogate escapes while the file is parsed, so an error can
name the line and the field they sit in instead of a byte offset into the whole file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from emomatch.errors import DataError

_SURROGATE = re.compile("[\ud800-\udfff]")
# The csv module refuses cells over 128 KiB by default; a manifest's ``words`` column (word
# timings of a long recording from ``emomatch transcribe``) can hold more.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
#: how many offending lines one error lists before it says "and N more"
SHOWN_PROBLEMS = 5


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("cp1252", errors="replace"), exc.end


#: ``data.decode("utf-8", CP1252_FALLBACK)``: UTF-8 where the bytes are UTF-8, Windows-1252 for
#: the bytes that are not (decoding a whole mixed line as Windows-1252 would garble its UTF-8)
CP1252_FALLBACK = "emomatch-cp1252-fallback"
codecs.register_error(CP1252_FALLBACK, _cp1252_fallback)


def read_text(path: Path, what: str) -> str:
    """The file's text, a UTF-8 byte-order mark dropped; see :func:`not_utf8`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return data.decode("utf-8", errors="surrogateescape")


def not_utf8(value: str) -> str | None:
    """Why ``value`` cannot be written as UTF-8, or None if it can."""
    match = _SURROGATE.search(value)
    if match is None:
        return None
    code = ord(match[0])
    if 0xDC80 <= code <= 0xDCFF:
        # surrogateescape puts byte b at U+DC00 + b
        return (
            f"byte 0x{code - 0xDC00:02x} is not UTF-8 (save the file as UTF-8, "
            "e.g. iconv -f cp1252 -t utf-8)"
        )
    return f"lone surrogate U+{code:04X} cannot be written as UTF-8"


def summarize(problems: list[str]) -> str:
    """The first few problems joined, with a count of the rest."""
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    rest = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {rest} more" if rest > 0 else "")


@dataclass
class CsvTable:
    path: Path
    #: column names, stripped of surrounding spaces
    header: list[str]
    #: (first line of the record in the file, its fields); blank lines are left out
    records: list[tuple[int, list[str]]]
    #: False if some text in the file is not UTF-8 (see encoding_problems)
    utf8: bool = True

    def column(self, index: int) -> str:
        return self.header[index] if index < len(self.header) else f"field {index + 1}"

    def encoding_problems(self) -> list[str]:
        """``line N, COLUMN: why`` for every cell that is not UTF-8 text."""
        found: list[str] = []
        if self.utf8:
            return found
        for line, record in self.records:
            for i, value in enumerate(record):
                why = not_utf8(value)
                if why is not None:
                    found.append(f"line {line}, {self.column(i)}: {why}")
                    break
        return found


def read_csv_table(path: Path, what: str) -> CsvTable:
    """Parse a CSV file with a header line; a quote that is never closed, text after a closing
    quote and a header that is empty or repeats a name are errors naming the line."""
    text = read_text(path, what)
    if not text.strip():
        raise DataError(f"{what} {path} is empty (expected a header line)")
    # strict: a stray quote is an error, not a cell that silently swallows the next lines
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for record in reader:
            if record and not (len(record) == 1 and not record[0].strip()):
                records.append((line, record))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(
            f"{what} {path}, line {line}: cannot be parsed as CSV ({exc}; "
            "a quote that is never closed?)"
        ) from None
    header_line, raw_header = records[0]
    bad = not_utf8(",".join(raw_header))
    if bad is not None:
        raise DataError(f"{what} {path}, line {header_line} (header): {bad}")
    header = [h.strip() for h in raw_header]
    for i, name in enumerate(header):
        if not name:
            raise DataError(
                f"{what} {path}, line {header_line} (header): column {i + 1} has no name"
            )
        if name in header[:i]:
            raise DataError(
                f"{what} {path}, line {header_line} (header): column {name!r} appears twice"
            )
    return CsvTable(path, header, records[1:], utf8=not_utf8(text) is None)
