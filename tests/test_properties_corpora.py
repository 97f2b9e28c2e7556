"""Property-based tests of the corpus readers' parsers: IEMOCAP EmoEvaluation and transcription
files, MELD CSVs, AMI words XML and meetings.xml, the folder corpus's transcript CSV.

Each parser either reads the file (skipping and reporting bad lines where that is its design,
each report naming the file and line) or raises one DataError naming the file; never another
exception. Valid generated files read back what was written, and every manifest a reader
writes is one the manifest reader accepts.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from emomatch.cli import app
from emomatch.corpora.ami import prepare_ami, read_meetings, read_words
from emomatch.corpora.folder import read_folder, read_transcripts
from emomatch.corpora.iemocap import (
    IEMOCAP_CODES,
    parse_evaluation,
    parse_transcription,
    read_iemocap,
)
from emomatch.corpora.manifest import read_manifest
from emomatch.corpora.meld import MELD_CLASSES, read_meld, read_meld_csv, repair_text
from emomatch.errors import DataError, EmomatchError
from tests.support.corpus_fixtures import MELD_COLUMNS
from tests.support.property_helpers import plain_cell, scratch

runner = CliRunner()


def mutate(data: bytes, edits: list[tuple[int, bytes]], truncate: int | None) -> bytes:
    for at, piece in edits:
        at %= len(data) + 1
        data = data[:at] + piece + data[at:]
    return data if truncate is None else data[: truncate % (len(data) + 1)]


PIECES = st.one_of(
    st.sampled_from(
        [
            b'"',
            b",",
            b"\n",
            b"\r",
            b"\t",
            b"\xff",
            b"\xe9",
            b"\x00",
            b"[",
            b"]",
            b"-",
            b":",
            b"9" * 400,
            b"nan",
            b"inf",
            b"<",
            b">",
            b"&",
            b"<w>",
            b"</w>",
            b'starttime="x"',
            b"\xef\xbb\xbf",
            b'<?xml version="1.0" encoding="nope"?>',
        ]
    ),
    st.binary(min_size=1, max_size=5),
)
edits = st.lists(st.tuples(st.integers(0, 10**6), PIECES), max_size=4)
truncation = st.one_of(st.none(), st.integers(0, 10**6))


def assert_clear(exc: EmomatchError, path: Path) -> None:
    message = str(exc)
    assert str(path) in message
    assert "Traceback" not in message
    message.encode("utf-8")  # printable by the CLI


def assert_problems_name_lines(problems: list[str], path: Path) -> None:
    """Each problem names the file, and a line as ``FILE:LINE:`` where it names one."""
    for problem in problems:
        problem.encode("utf-8")
        assert problem.startswith(str(path)), problem
        assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", problem), problem


# --- IEMOCAP ------------------------------------------------------------------------------------

DIALOG = "Ses01F_impro01"
times = st.integers(0, 10**7).map(lambda n: n / 10**4)


@st.composite
def evaluations(draw: st.DrawFn) -> list[tuple[str, str, float, float, tuple[float, ...]]]:
    n = draw(st.integers(0, 6))
    out = []
    for k in range(n):
        start = draw(times)
        end = start + draw(st.integers(1, 10**6)) / 10**4
        vad = tuple(draw(st.integers(0, 50000)) / 10**4 for _ in range(3))
        uid = f"{DIALOG}_{draw(st.sampled_from('FM'))}{k:03d}"
        out.append((uid, draw(st.sampled_from(IEMOCAP_CODES)), start, end, vad))
    return out


def evaluation_text(items: list[tuple[str, str, float, float, tuple[float, ...]]]) -> str:
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for uid, code, start, end, (v, a, d) in items:
        lines.append(f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
        lines += ["C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  3;\t()", ""]
    return "\n".join(lines) + "\n"


@given(items=evaluations(), bom=st.booleans(), crlf=st.booleans())
def test_iemocap_evaluation_reads_back_what_was_written(items, bom: bool, crlf: bool) -> None:
    text = evaluation_text(items)
    data = (codecs.BOM_UTF8 if bom else b"") + text.replace("\n", "\r\n" if crlf else "\n").encode()
    with scratch() as folder:
        path = folder / f"{DIALOG}.txt"
        path.write_bytes(data)
        problems: list[str] = []
        found = parse_evaluation(path, problems)
    assert problems == []
    assert [
        (a.id, a.code, a.start, a.end, (a.valence, a.activation, a.dominance)) for a in found
    ] == [
        (uid, code, float(f"{s:.4f}"), float(f"{e:.4f}"), tuple(float(f"{x:.4f}") for x in vad))
        for uid, code, s, e, vad in items
    ]


@given(
    items=evaluations(),
    edits=edits,
    truncate=truncation,
    raw=st.booleans(),
    data=st.binary(max_size=300),
)
@example(
    items=[],
    edits=[],
    truncate=None,
    raw=True,
    data=b"[1" + b"0" * 400 + b" - 2" + b"0" * 400 + b"]\tSes01F_impro01_F000\tneu\t[1, 2, 3]\n",
)
def test_iemocap_evaluation_never_fails_and_names_lines(items, edits, truncate, raw, data) -> None:
    if not raw:
        data = mutate(evaluation_text(items).encode(), edits, truncate)
    with scratch() as folder:
        path = folder / f"{DIALOG}.txt"
        path.write_bytes(data)
        problems: list[str] = []
        found = parse_evaluation(path, problems)
    assert_problems_name_lines(problems, path)
    assert all(problem.startswith(f"{path}:") for problem in problems)
    for a in found:
        assert math.isfinite(a.start) and math.isfinite(a.end) and a.start < a.end
        assert a.code in IEMOCAP_CODES and a.dialog == DIALOG


def test_iemocap_files_that_cannot_be_read_are_reported(tmp_path: Path) -> None:
    unreadable = tmp_path / f"{DIALOG}.txt"
    unreadable.mkdir()  # e.g. a folder where the file should be (or no permission)
    problems: list[str] = []
    assert parse_evaluation(unreadable, problems) == []
    assert parse_transcription(unreadable, problems) == {}
    assert [p.split(": cannot be read")[0] for p in problems] == [str(unreadable)] * 2


sentences = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=20)


@given(
    texts=st.lists(sentences, max_size=5),
    bad=st.one_of(st.none(), st.integers(0, 4)),
    edits=edits,
    mutated=st.booleans(),
)
def test_iemocap_transcription_never_fails_and_reports_bad_bytes(texts, bad, edits, mutated):
    lines = [f"{DIALOG}_F{k:03d} [001.0000-002.0000]: {t}".encode() for k, t in enumerate(texts)]
    if bad is not None and lines:
        lines[bad % len(lines)] += b" caf\xe9"
    data = b"\n".join(lines) + b"\n"
    if mutated:
        data = mutate(data, edits, None)
    with scratch() as folder:
        path = folder / f"{DIALOG}.txt"
        path.write_bytes(data)
        problems: list[str] = []
        found = parse_transcription(path, problems)
    assert_problems_name_lines(problems, path)
    if mutated:
        return
    # where a line's own \x85 or similar does not split it, its text comes back normalized
    assert found == {
        f"{DIALOG}_F{k:03d}": " ".join(
            (t + (" café" if bad is not None and k == bad % len(texts) else "")).split()
        )
        for k, t in enumerate(texts)
    }
    if bad is not None and texts:
        assert problems == [
            f"{path}:{bad % len(texts) + 1}: byte 0xe9 is not UTF-8, read as Windows-1252; "
            "check the text"
        ]


@given(items=evaluations(), edits=edits, truncate=truncation)
def test_iemocap_reader_writes_a_readable_manifest_or_one_error(items, edits, truncate) -> None:
    with scratch() as root:
        evaluation = root / "Session1" / "dialog" / "EmoEvaluation" / f"{DIALOG}.txt"
        evaluation.parent.mkdir(parents=True)
        evaluation.write_bytes(mutate(evaluation_text(items).encode(), edits, truncate))
        wavs = root / "Session1" / "sentences" / "wav" / DIALOG
        wavs.mkdir(parents=True)
        for uid, *_ in items:
            (wavs / f"{uid}.wav").write_bytes(b"RIFF")
        out = root / "out"
        try:
            prepared = read_iemocap(root, out)
        except DataError as exc:
            assert str(root) in str(exc)
            return
        df = read_manifest(prepared.manifest)
    assert len(df) == prepared.rows > 0


# --- MELD ---------------------------------------------------------------------------------------

MELD_HEADER = list(MELD_COLUMNS)
meld_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=15)


@st.composite
def meld_rows(draw: st.DrawFn) -> list[dict[str, str]]:
    n = draw(st.integers(0, 5))
    return [
        {
            "Sr No.": str(k + 1),
            "Utterance": draw(meld_text),
            "Speaker": draw(meld_text),
            "Emotion": draw(st.sampled_from(MELD_CLASSES)),
            "Sentiment": draw(st.sampled_from(["neutral", "positive", "negative"])),
            "Dialogue_ID": str(draw(st.integers(0, 10**6))),
            "Utterance_ID": str(k),
            "Season": "1",
            "Episode": "2",
            "StartTime": "00:00:01,000",
            "EndTime": "00:00:02,000",
        }
        for k in range(n)
    ]


def meld_csv(rows: list[dict[str, str]], newline: str = "\n") -> bytes:
    out = io.StringIO(newline="")
    # Python's writer leaves a lone \r unquoted unless it is in the line terminator
    quoting = csv.QUOTE_ALL if newline == "\n" else csv.QUOTE_MINIMAL
    writer = csv.DictWriter(out, fieldnames=MELD_HEADER, lineterminator=newline, quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@given(rows=meld_rows(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_meld_csv_reads_back_what_was_written(rows, newline: str, bom: bool) -> None:
    with scratch() as folder:
        path = folder / "train_sent_emo.csv"
        path.write_bytes((codecs.BOM_UTF8 if bom else b"") + meld_csv(rows, newline))
        problems: list[str] = []
        found = read_meld_csv(path, "train", problems)
    assert problems == []
    assert [(r.dialogue, r.utterance, r.emotion, r.text, r.speaker) for r in found] == [
        (
            int(r["Dialogue_ID"]),
            int(r["Utterance_ID"]),
            r["Emotion"],
            " ".join(repair_text(r["Utterance"]).split()),
            " ".join(repair_text(r["Speaker"]).split()),
        )
        for r in rows
    ]


@given(
    rows=meld_rows(),
    edits=edits,
    truncate=truncation,
    raw=st.booleans(),
    data=st.binary(max_size=300),
)
@example(rows=[], edits=[], truncate=None, raw=True, data=b"")
@example(rows=[], edits=[], truncate=None, raw=True, data=b'"Sr No.\n')
def test_meld_csv_never_fails_and_names_lines(rows, edits, truncate, raw, data) -> None:
    if not raw:
        data = mutate(meld_csv(rows), edits, truncate)
    with scratch() as folder:
        path = folder / "train_sent_emo.csv"
        path.write_bytes(data)
        problems: list[str] = []
        try:
            found = read_meld_csv(path, "train", problems)
        except DataError as exc:
            assert_clear(exc, path)
            return
    assert_problems_name_lines(problems, path)
    assert all(r.emotion in MELD_CLASSES for r in found)


def test_meld_csv_not_utf8_keeps_its_utf8_text_and_names_the_line(tmp_path: Path) -> None:
    base = {name: "1" for name in MELD_HEADER} | {"Emotion": "joy", "Speaker": "Ross"}
    rows = [
        base | {"Utterance": "Árbol señor", "Utterance_ID": "0"},
        base | {"Utterance": "It\x92s", "Utterance_ID": "1"},
    ]
    data = meld_csv(rows).replace("It\x92s".encode(), b"It\x92s")
    path = tmp_path / "train_sent_emo.csv"
    path.write_bytes(data)
    problems: list[str] = []
    found = read_meld_csv(path, "train", problems)
    # "Á" is c3 81 in UTF-8 and 0x81 has no Windows-1252 letter: a whole-file fallback lost it
    assert [r.text for r in found] == ["Árbol señor", "It’s"]
    assert problems == [
        f"{path}:3: byte 0x92 is not UTF-8 (the file's first); such bytes are read as "
        "Windows-1252, check the text"
    ]


@given(text=st.text())
@example(text="Itâ€™s")
@example(text="\x92\x93\x94")
@example(text="ÃÂ" * 20)
def test_meld_repair_never_fails_and_keeps_text_it_cannot_mean(text: str) -> None:
    fixed = repair_text(text)
    assert isinstance(fixed, str)
    # text with no character a mis-decoding produces (Latin-1 and Windows-1252 letters) is kept
    if all(ord(c) < 0x80 or ord(c) > 0x2122 for c in text):
        assert fixed == text


@given(rows=meld_rows(), edits=edits, truncate=truncation)
def test_meld_reader_writes_a_readable_manifest_or_one_error(rows, edits, truncate) -> None:
    with scratch() as root:
        (root / "train_sent_emo.csv").write_bytes(mutate(meld_csv(rows), edits, truncate))
        try:
            prepared = read_meld(root, root / "out", probe=False)
        except DataError as exc:
            assert_clear(exc, root)
            return
        df = read_manifest(prepared.manifest)
    assert len(df) == prepared.rows


# --- AMI ----------------------------------------------------------------------------------------

word_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)


@st.composite
def words(draw: st.DrawFn) -> list[tuple[str, float, float]]:
    n = draw(st.integers(0, 8))
    out = []
    for _ in range(n):
        start = draw(st.floats(0, 1e4, allow_nan=False))
        out.append((draw(word_text), start, start + draw(st.floats(0, 10, allow_nan=False))))
    return out


def words_xml(items: list[tuple[str, float, float]]) -> bytes:
    body = "".join(
        f"<w nite:id='w{k}' starttime={quoteattr(repr(s))} endtime={quoteattr(repr(e))}>"
        f"{escape(w)}</w><vocalsound type='laugh'/>"
        for k, (w, s, e) in enumerate(items)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<nite:root xmlns:nite="http://nite.sourceforge.net/">{body}</nite:root>'
    ).encode()


@given(items=words())
def test_ami_words_read_back_in_time_order(items) -> None:
    with scratch() as folder:
        path = folder / "ES2002a.A.words.xml"
        path.write_bytes(words_xml(items))
        transcript, skipped = read_words(path, "ES2002a", "A")
    kept = [(w, s, e) for w, s, e in items if " ".join(w.split())]
    order = sorted(range(len(kept)), key=lambda i: (kept[i][1] + kept[i][2]) / 2)
    assert transcript.words == [" ".join(kept[i][0].split()) for i in order]
    assert list(transcript.starts) == [kept[i][1] for i in order]
    assert skipped["vocalsound"] == len(items)


@given(
    items=words(), edits=edits, truncate=truncation, raw=st.booleans(), data=st.binary(max_size=300)
)
@example(
    items=[],
    edits=[],
    truncate=None,
    raw=True,
    data=b"<r><w starttime='1e308' endtime='1.7e308'>a</w></r>",
)
@example(
    items=[], edits=[], truncate=None, raw=True, data=b'<?xml version="1.0" encoding="nope"?><r/>'
)
def test_ami_words_parse_or_raise_only_what_the_reader_reports(items, edits, truncate, raw, data):
    if not raw:
        data = mutate(words_xml(items), edits, truncate)
    with scratch() as folder:
        path = folder / "ES2002a.A.words.xml"
        path.write_bytes(data)
        try:
            transcript, _ = read_words(path, "ES2002a", "A")
        except (ET.ParseError, LookupError):
            return  # prepare_ami reports these as "malformed XML", tested below
    assert all(0 <= s <= e for s, e in zip(transcript.starts, transcript.ends, strict=True))
    assert all(math.isfinite(m) for m in transcript.midpoints)


MEETINGS = (
    b'<meetings><meeting observation="ES2002a" duration="1000">'
    b'<speaker nxt_agent="A" channel="0" global_name="FEE005"/></meeting></meetings>'
)


@given(items=words(), edits=edits, truncate=truncation, meetings_edits=edits)
@example(
    items=[("a", 1e308, 1e308), ("b", 1e308, 1e308), ("c", 1e308, 1e308)],
    edits=[],
    truncate=None,
    meetings_edits=[],
)
def test_ami_prepare_writes_a_readable_manifest_or_one_error(
    items, edits, truncate, meetings_edits
) -> None:
    with scratch() as root:
        (root / "words").mkdir()
        (root / "corpusResources").mkdir()
        (root / "corpusResources" / "meetings.xml").write_bytes(
            mutate(MEETINGS, meetings_edits, None)
        )
        (root / "words" / "ES2002a.A.words.xml").write_bytes(
            mutate(words_xml(items), edits, truncate)
        )
        try:
            prepared = prepare_ami(root, root / "out", windows=5, width=2.0, require="")
        except DataError as exc:
            assert_clear(exc, root)
            return
        if prepared.rows:
            df = read_manifest(prepared.manifest)
            assert len(df) == prepared.rows
            assert all(df["end"] > df["start"])


@given(data=st.binary(max_size=300))
def test_ami_meetings_xml_parses_or_is_one_error(data: bytes) -> None:
    with scratch() as folder:
        path = folder / "meetings.xml"
        path.write_bytes(data)
        try:
            read_meetings(path)
        except DataError as exc:
            assert_clear(exc, path)


# --- folder corpus ------------------------------------------------------------------------------

cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@st.composite
def transcripts(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    extra = draw(
        st.lists(
            st.sampled_from(["label", "speaker", "split", "mood", "start"]), unique=True, max_size=3
        )
    )
    header = ["id", "text", *extra]
    n = draw(st.integers(0, 5))
    rows = []
    for k in range(n):
        row = [f"clip{k}", draw(cell)]
        for name in extra:
            row.append(repr(draw(st.floats(0, 1e6))) if name == "start" else draw(cell))
        rows.append(row)
    return header, rows


def transcript_csv(header: list[str], rows: list[list[str]], newline: str = "\n") -> bytes:
    out = io.StringIO(newline="")
    quoting = csv.QUOTE_ALL if newline == "\n" else csv.QUOTE_MINIMAL
    writer = csv.writer(out, lineterminator=newline, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@given(table=transcripts(), newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_transcripts_read_back_what_was_written(table, newline: str, bom: bool) -> None:
    header, rows = table
    with scratch() as folder:
        path = folder / "t.csv"
        path.write_bytes((codecs.BOM_UTF8 if bom else b"") + transcript_csv(header, rows, newline))
        found, problems = read_transcripts(path)
    assert found == {
        row[0]: {name: value.strip() for name, value in zip(header, row, strict=True)}
        for row in rows
    }
    assert problems == ([] if rows else [f"{path}: a header only, no transcripts"])


@given(
    table=transcripts(),
    edits=edits,
    truncate=truncation,
    raw=st.booleans(),
    data=st.binary(max_size=300),
)
@example(table=(["id"], []), edits=[], truncate=None, raw=True, data=b"id,text\nx,\xff\n")
@example(table=(["id"], []), edits=[], truncate=None, raw=True, data=b'id,text\nx,"open\n')
@example(table=(["id"], []), edits=[], truncate=None, raw=True, data=b"id,text,start\nx,y,nan\n")
def test_transcripts_read_or_one_clear_error(table, edits, truncate, raw, data) -> None:
    if not raw:
        data = mutate(transcript_csv(*table), edits, truncate)
    with scratch() as folder:
        path = folder / "t.csv"
        path.write_bytes(data)
        try:
            _, problems = read_transcripts(path)
        except DataError as exc:
            assert_clear(exc, path)
            return
    assert_problems_name_lines(problems, path)


@given(
    texts=st.lists(
        plain_cell,
        min_size=1,
        max_size=5,
    ),
    which=st.integers(0, 4),
)
def test_transcript_row_that_is_not_utf8_names_file_line_and_field(texts, which) -> None:
    which %= len(texts)
    lines = [b"id,text"] + [
        f"clip{k},{t}".encode() + (b" caf\xe9" if k == which else b"") for k, t in enumerate(texts)
    ]
    with scratch() as folder:
        path = folder / "t.csv"
        path.write_bytes(b"\r\n".join(lines))
        with pytest.raises(DataError) as caught:
            read_transcripts(path)
    assert str(caught.value) == (
        f"transcript file {path}: line {which + 2}, text: byte 0xe9 is not UTF-8 (save the "
        "file as UTF-8, e.g. iconv -f cp1252 -t utf-8)"
    )


@given(table=transcripts(), edits=edits, truncate=truncation)
def test_folder_reader_writes_a_readable_manifest_or_one_error(table, edits, truncate) -> None:
    with scratch() as root:
        clips = root / "clips"
        (clips / "spk").mkdir(parents=True)
        for k in range(3):
            (clips / "spk" / f"clip{k}.wav").write_bytes(b"RIFF")
        (root / "t.csv").write_bytes(mutate(transcript_csv(*table), edits, truncate))
        try:
            prepared = read_folder(clips, root / "out", transcripts=str(root / "t.csv"))
        except DataError as exc:
            assert_clear(exc, root / "t.csv")
            return
        df = read_manifest(prepared.manifest)
    assert sorted(df["id"]) == ["spk/clip0", "spk/clip1", "spk/clip2"]


def test_clip_whose_name_is_not_utf8_is_skipped_and_reported(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "good.wav").write_bytes(b"RIFF")
    Path(os.fsdecode(bytes(clips) + b"/caf\xe9.wav")).write_bytes(b"RIFF")
    prepared = read_folder(clips, tmp_path / "out")
    assert list(read_manifest(prepared.manifest)["id"]) == ["good"]
    assert any("file name: byte 0xe9 is not UTF-8" in p for p in prepared.problems)


# --- through the command line: one sentence, exit code 2 ----------------------------------------


def test_cli_extract_with_non_utf8_transcripts_is_one_clear_error(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "a.wav").write_bytes(b"RIFF")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"id,text\na,hello\nb,caf\xe9\n")
    result = runner.invoke(
        app, ["extract", str(clips), "--transcripts", str(bad), "--out", str(tmp_path / "S")]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: transcript file {bad}: line 3, text: byte 0xe9 is not UTF-8 (save the file as "
        "UTF-8, e.g. iconv -f cp1252 -t utf-8)"
    )
    assert not isinstance(result.exception, UnicodeError)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,audio,video,text,start,end,speaker,label,split\n", "no rows (a header only)"),
        (
            b"id,audio,video,text,start,end,speaker,label,split\na,,,caf\xe9,,,s,,train\n",
            "line 2, text: byte 0xe9 is not UTF-8",
        ),
        (
            "id,audio,video,text,start,end,speaker,label,split\na,,,x,nan,1,s,,train\n",
            "line 2, start: 'nan' is not a finite number",
        ),
    ],
)
def test_cli_extract_with_a_bad_manifest_is_one_clear_error(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    manifest = tmp_path / "m.csv"
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        manifest.write_text(content)
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(tmp_path / "S")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: manifest {manifest}: {message}")


def test_ami_word_times_past_any_meeting_are_skipped_not_a_crash(tmp_path: Path) -> None:
    # 1e308 + 1e308 overflows: the window id round(inf * 1000) was an OverflowError traceback
    (tmp_path / "words").mkdir()
    (tmp_path / "corpusResources").mkdir()
    (tmp_path / "corpusResources" / "meetings.xml").write_bytes(
        MEETINGS.replace(b' duration="1000"', b"")
    )
    far = [(w, 1e308, 1e308) for w in "abc"]
    near = [(w, float(k), k + 0.5) for k, w in enumerate("defg")]
    (tmp_path / "words" / "ES2002a.A.words.xml").write_bytes(words_xml(far + near))
    prepared = prepare_ami(tmp_path, tmp_path / "out", windows=5, width=2.0, require="")
    assert prepared.counts["left_out_elements"]["untimed word"] == 3
    assert set(" ".join(read_manifest(prepared.manifest)["text"]).split()) <= set("defg")


# --- reader options as `emomatch prepare CORPUS ROOT --option KEY=VALUE` passes them: text ------

OPTION_NAMES = {
    "iemocap": ["labels", "both_orders", "sessions", "absolute_paths", "audio", "layout"],
    "meld": ["probe", "workers", "absolute_paths", "train_clips", "layout"],
    "ami": ["width", "windows", "seed", "meetings", "camera_map", "require", "folds", "audio"],
    "folder": ["transcripts", "absolute_paths"],
}
option_text = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "1,2",
            "0",
            "-1",
            "nan",
            "inf",
            "1e3",
            "9" * 30,
            "true",
            "x",
            "A=1,B=2",
            "A=x",
            "audio",
            "acoustic",
            "4class",
            ",",
            "١",
        ]
    ),
    st.text(max_size=8),
)


def make_tree(corpus: str, root: Path) -> None:
    if corpus == "iemocap":
        folder = root / "Session1" / "dialog" / "EmoEvaluation"
        folder.mkdir(parents=True)
        (folder / f"{DIALOG}.txt").write_text(
            evaluation_text([(f"{DIALOG}_F000", "neu", 1.0, 2.0, (1.0, 2.0, 3.0))])
        )
        wavs = root / "Session1" / "sentences" / "wav" / DIALOG
        wavs.mkdir(parents=True)
        (wavs / f"{DIALOG}_F000.wav").write_bytes(b"RIFF")
    elif corpus == "meld":
        rows = [{name: "1" for name in MELD_HEADER} | {"Emotion": "joy", "Utterance": "hi"}]
        (root / "train_sent_emo.csv").write_bytes(meld_csv(rows))
    elif corpus == "ami":
        (root / "words").mkdir()
        (root / "corpusResources").mkdir()
        (root / "corpusResources" / "meetings.xml").write_bytes(MEETINGS)
        items = [(w, float(k), k + 0.5) for k, w in enumerate("abcde")]
        (root / "words" / "ES2002a.A.words.xml").write_bytes(words_xml(items))
    else:
        (root / "a.wav").write_bytes(b"RIFF")


@given(
    corpus=st.sampled_from(sorted(OPTION_NAMES)),
    data=st.data(),
)
@example(corpus="iemocap", data=None)
def test_reader_options_from_the_command_line_run_or_are_one_clear_error(corpus, data) -> None:
    from emomatch.corpora import prepare_corpus

    if data is None:  # the example that failed before: sessions=1,2 gave a ValueError traceback
        options = {"sessions": "1,2"}
    else:
        names = data.draw(st.lists(st.sampled_from(OPTION_NAMES[corpus]), unique=True, max_size=3))
        options = {name: data.draw(option_text) for name in names}
    with scratch() as root:
        make_tree(corpus, root)
        try:
            prepared = prepare_corpus(corpus, root, root / "out", **options)
        except EmomatchError as exc:
            str(exc).encode("utf-8")
            assert "Traceback" not in str(exc)
            return
        if prepared.rows:
            read_manifest(prepared.manifest)


@pytest.mark.parametrize("value", ["[", "{a: b: c}", "[" * 3000])
def test_cli_extract_option_value_that_is_not_yaml_is_one_clear_error(
    tmp_path: Path, value: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio,video,text,start,end,speaker,label,split\na,,,x,,,s,,train\n")
    pair = f"acoustic.feature_set={value}"
    result = runner.invoke(
        app, ["extract", str(manifest), "--out", str(tmp_path / "S"), "--option", pair]
    )
    assert result.exit_code == 2
    assert (
        result.output.strip() == f"error: --option {pair!r}: the value is not valid YAML; quote it"
    )
