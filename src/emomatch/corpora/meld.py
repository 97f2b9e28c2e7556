"""MELD as released (``MELD.Raw/``) -> manifest on the official train/dev/test split.

One row per CSV line: ``id`` ``<train|dev|test>_dia{D}_utt{U}`` (dialogue and utterance numbers
repeat across MELD's splits), ``split`` train/validation/test, ``speaker`` the Speaker column,
``label`` one of the 7 emotions, ``text`` the utterance (multi-line quoted cells joined with
spaces, mis-encoded quotes such as ``Â’`` / ``â€™`` repaired). The clip goes in both ``audio``
and ``video``: the audio is its soundtrack. Clips are whole files, so ``start``/``end`` stay
empty.

A clip that is missing, empty or cannot be opened (MELD has a few: dev ``dia110_utt7`` missing,
train ``dia125_utt3`` corrupt) is reported and its row left out, so extraction never meets it.
A split whose clip folder is absent altogether (e.g. a copy with only the CSVs) gives text-only
rows, with a note: MELD's lexical branch can still be trained and evaluated on it.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from emomatch.corpora.base import (
    CORPORA,
    PROBLEMS_FILE,
    PreparedCorpus,
    check_options,
    flag_option,
    int_option,
    layout_with,
    media_path,
)
from emomatch.corpora.manifest import write_manifest
from emomatch.corpora.textfile import CP1252_FALLBACK
from emomatch.errors import DataError

log = logging.getLogger(__name__)

MELD_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
#: MELD's split name -> the manifest's split name (DataConfig's defaults)
MELD_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


@dataclass(frozen=True)
class MeldLayout:
    """Every path the reader assumes, relative to the root. Clip folder names vary between
    unpackings (``dev_splits_complete`` at the top, ``output_repeated_splits_test`` renamed,
    ...): change them here, or with the reader's ``train_clips``/``dev_clips``/``test_clips``."""

    train_csv: str = "train_sent_emo.csv"
    dev_csv: str = "dev_sent_emo.csv"
    test_csv: str = "test_sent_emo.csv"
    train_clips: str = "train/train_splits"
    dev_clips: str = "dev/dev_splits_complete"
    test_clips: str = "test/output_repeated_splits_test"
    clip: str = "dia{dialogue}_utt{utterance}.mp4"

    def csv_path(self, split: str) -> str:
        return str(getattr(self, f"{split}_csv"))

    def clip_folder(self, split: str) -> str:
        return str(getattr(self, f"{split}_clips"))


@dataclass(frozen=True)
class MeldRow:
    split: str  # MELD's name: train, dev, test
    line: int
    dialogue: int
    utterance: int
    text: str
    speaker: str
    emotion: str
    sentiment: str
    season: str
    episode: str
    #: the utterance or speaker was mis-encoded and repaired
    repaired: bool = False

    @property
    def id(self) -> str:
        return f"{self.split}_dia{self.dialogue}_utt{self.utterance}"


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
_C1_CONTROL = re.compile(r"[\x80-\x9f]")


def _as_cp1252_bytes(run: str) -> bytes | None:
    out = bytearray()
    for ch in run:
        if "\x80" <= ch <= "\x9f":
            # a byte that was decoded as Latin-1 instead of Windows-1252
            out.append(ord(ch))
        else:
            try:
                out += ch.encode("cp1252")
            except UnicodeEncodeError:
                return None
    return bytes(out)


def _repair_run(match: re.Match[str]) -> str:
    run = match[0]
    raw = _as_cp1252_bytes(run)
    if raw is not None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return _C1_CONTROL.sub(lambda c: bytes([ord(c[0])]).decode("cp1252", errors="ignore"), run)


def repair_text(text: str) -> str:
    """Undo the mis-decodings found in copies of MELD's CSVs: UTF-8 read as Windows-1252
    (``â€™`` -> ``’``, ``Â’`` -> ``’``) and Windows-1252 bytes left as C1 controls (``\\x92``).

    Works run by run on non-ASCII characters, and only where the bytes decode as UTF-8, so
    correct text (``’``, ``…``, ``é``) is left alone."""
    for _ in range(3):  # text mis-decoded twice needs two rounds
        fixed = _NON_ASCII_RUN.sub(_repair_run, text)
        if fixed == text:
            break
        text = fixed
    return text


def _decode(path: Path, problems: list[str]) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Only the bytes that are not UTF-8 are read as Windows-1252: decoding the whole file
        # that way would garble its UTF-8 text beyond what repair_text can undo.
        line = len(_LINE_BREAK.findall(data, 0, exc.start)) + 1
        problems.append(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 (the file's first); "
            "such bytes are read as Windows-1252, check the text"
        )
        return data.decode("utf-8-sig", CP1252_FALLBACK)


def read_meld_csv(path: Path, split: str, problems: list[str]) -> list[MeldRow]:
    """Rows of one ``*_sent_emo.csv``; a bad row is reported with file and line and skipped."""
    reader = csv.reader(io.StringIO(_decode(path, problems), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        problems.append(f"{path}: empty file")
        return []
    except csv.Error as exc:
        raise DataError(f"{path}: cannot parse the CSV header ({exc})") from None
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {', '.join(absent)} (found: {', '.join(header)})"
        )
    col = {name: i for i, name in enumerate(header)}

    def cell(record: list[str], name: str) -> str:
        i = col.get(name)
        return record[i] if i is not None else ""

    rows: list[MeldRow] = []
    end_of_last = reader.line_num
    while True:
        line = end_of_last + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"{path}:{line}: cannot parse ({exc}); the rest of the file is lost")
            break
        end_of_last = reader.line_num
        if not any(v.strip() for v in record):
            continue
        where = f"{path}:{line}"
        if len(record) != len(header):
            problems.append(f"{where}: {len(record)} fields, the header has {len(header)}")
            continue
        try:
            dialogue = int(cell(record, "Dialogue_ID"))
            utterance = int(cell(record, "Utterance_ID"))
        except ValueError:
            problems.append(
                f"{where}: Dialogue_ID {cell(record, 'Dialogue_ID')!r} / Utterance_ID "
                f"{cell(record, 'Utterance_ID')!r} are not whole numbers"
            )
            continue
        emotion = cell(record, "Emotion").strip().lower()
        if emotion not in MELD_CLASSES:
            problems.append(
                f"{where}: unknown Emotion {cell(record, 'Emotion')!r} "
                f"(MELD's are {', '.join(MELD_CLASSES)})"
            )
            continue
        text, speaker = cell(record, "Utterance"), cell(record, "Speaker")
        fixed_text, fixed_speaker = repair_text(text), repair_text(speaker)
        rows.append(
            MeldRow(
                split=split,
                line=line,
                dialogue=dialogue,
                utterance=utterance,
                text=" ".join(fixed_text.split()),
                speaker=" ".join(fixed_speaker.split()),
                repaired=(fixed_text, fixed_speaker) != (text, speaker),
                emotion=emotion,
                sentiment=cell(record, "Sentiment").strip().lower(),
                season=cell(record, "Season").strip(),
                episode=cell(record, "Episode").strip(),
            )
        )
    return rows


@dataclass(frozen=True)
class ClipProbe:
    #: why the clip cannot be used; None if it opens
    error: str | None
    has_audio: bool = False
    has_video: bool = False


def probe_clip(path: Path) -> ClipProbe:
    """Open the container and list its streams, without decoding anything (a few ms)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ClipProbe("missing")
    except OSError as exc:
        return ClipProbe(f"unreadable ({exc})")
    if size == 0:
        return ClipProbe("zero-size file")
    import av

    try:
        with av.open(str(path)) as container:
            return ClipProbe(None, bool(container.streams.audio), bool(container.streams.video))
    # A damaged file can fail anywhere inside FFmpeg; any failure means "skip this clip".
    except Exception as exc:
        return ClipProbe(f"cannot be opened ({type(exc).__name__}: {exc})")


def _layout(
    layout: MeldLayout | Mapping[str, str] | None, overrides: Mapping[str, str | None]
) -> MeldLayout:
    base = layout if isinstance(layout, MeldLayout) else MeldLayout()
    changes = dict(layout) if isinstance(layout, Mapping) else {}
    changes.update({k: v for k, v in overrides.items() if v is not None})
    return layout_with(base, changes, "MELD")


def read_meld(
    root: Path,
    out: Path,
    layout: MeldLayout | Mapping[str, str] | None = None,
    train_clips: str | None = None,
    dev_clips: str | None = None,
    test_clips: str | None = None,
    probe: bool | str = True,
    workers: int | str = 4,
    absolute_paths: bool | str = False,
) -> PreparedCorpus:
    """Write ``out/manifest.csv``. ``probe``: open every clip to skip unreadable ones (turn off
    only for a copy known to be clean); ``workers``: threads probing clips."""
    root, out = Path(root), Path(out)
    paths = _layout(
        layout, {"train_clips": train_clips, "dev_clips": dev_clips, "test_clips": test_clips}
    )
    check_clips = flag_option(probe, "MELD", "probe")
    threads = int_option(workers, "MELD", "workers", 1)
    absolute = flag_option(absolute_paths, "MELD", "absolute_paths")
    if not root.is_dir():
        raise DataError(f"MELD root {root} is not a folder")
    csvs = {s: root / paths.csv_path(s) for s in MELD_SPLITS}
    present = {s: p for s, p in csvs.items() if p.is_file()}
    if not present:
        entries = sorted(p.name for p in root.iterdir())
        shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "") or "nothing"
        raise DataError(
            f"{root} is not a MELD release: expected {', '.join(paths.csv_path(s) for s in csvs)}"
            f" in it, found: {shown}"
        )
    problems: list[str] = []
    for split, path in csvs.items():
        if split not in present:
            others = "/".join(MELD_SPLITS[s] for s in present)
            problems.append(f"{path} not found: no {MELD_SPLITS[split]} split ({others} only)")

    rows: list[MeldRow] = []
    seen: dict[str, int] = {}
    for split, path in present.items():
        for row in read_meld_csv(path, split, problems):
            if row.id in seen:
                problems.append(
                    f"{path}:{row.line}: dia{row.dialogue}_utt{row.utterance} repeats line "
                    f"{seen[row.id]}, skipped"
                )
                continue
            seen[row.id] = row.line
            rows.append(row)

    folders = {s: root / paths.clip_folder(s) for s in present}
    with_clips = {s for s, f in folders.items() if f.is_dir()}
    if not with_clips:
        problems.append(
            f"no clip folder ({', '.join(str(f) for f in folders.values())}): "
            "text-only manifest (audio and video empty)"
        )
    else:
        for s in sorted(set(present) - with_clips):
            problems.append(f"clip folder {folders[s]} not found: {s} rows are text-only")
    clip_of = {
        r.id: folders[r.split] / paths.clip.format(dialogue=r.dialogue, utterance=r.utterance)
        for r in rows
        if r.split in with_clips
    }
    probes = _probe_all(clip_of, check_clips, threads)

    records: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for r in rows:
        audio = video = ""
        clip = clip_of.get(r.id)
        if clip is not None:
            found = probes[r.id]
            if found.error is not None:
                problems.append(f"{r.id}: clip {clip}: {found.error}; utterance skipped")
                skipped[MELD_SPLITS[r.split]] += 1
                continue
            media = media_path(clip, out, absolute)
            video = media if found.has_video else ""
            audio = media if found.has_audio else ""
            if not found.has_audio:
                problems.append(f"{r.id}: clip {clip} has no soundtrack, audio left empty")
        if not (audio or video or r.text):
            problems.append(f"{r.id}: empty utterance and no clip, skipped")
            skipped[MELD_SPLITS[r.split]] += 1
            continue
        records.append(
            {
                "id": r.id,
                "audio": audio,
                "video": video,
                "text": r.text,
                "start": None,
                "end": None,
                "speaker": r.speaker,
                "label": r.emotion,
                "split": MELD_SPLITS[r.split],
                "dialogue": r.dialogue,
                "utterance": r.utterance,
                "sentiment": r.sentiment,
                "season": r.season,
                "episode": r.episode,
            }
        )
    if not records:
        raise DataError(f"MELD under {root}: no usable row; problems: {'; '.join(problems[:5])}")
    df = pd.DataFrame(records)
    out.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(df, out / "manifest.csv")
    counts: dict[str, Any] = {
        "rows": len(df),
        "split": {s: int((df["split"] == s).sum()) for s in MELD_SPLITS.values()},
        "label": {c: int((df["label"] == c).sum()) for c in MELD_CLASSES},
        "split_label": {
            s: {c: int(((df["split"] == s) & (df["label"] == c)).sum()) for c in MELD_CLASSES}
            for s in MELD_SPLITS.values()
            if (df["split"] == s).any()
        },
        "skipped": dict(skipped),
        "clips": "probed" if check_clips and with_clips else ("listed" if with_clips else "none"),
        "text_only": int(((df["audio"] == "") & (df["video"] == "")).sum()),
        "repaired_text": sum(r.repaired for r in rows),
    }
    if problems:
        log.warning("MELD: %d problem(s), listed in %s", len(problems), Path(out) / PROBLEMS_FILE)
    return PreparedCorpus(
        manifest=manifest,
        rows=len(df),
        classes=list(MELD_CLASSES),
        folds=[],
        problems=problems,
        counts=counts,
    )


def _probe_all(clips: Mapping[str, Path], open_each: bool, workers: int) -> dict[str, ClipProbe]:
    if not open_each:
        # Still refuse what is certainly unusable; trust the rest.
        return {
            uid: ClipProbe("missing")
            if not p.is_file()
            else ClipProbe("zero-size file")
            if p.stat().st_size == 0
            else ClipProbe(None, True, True)
            for uid, p in clips.items()
        }
    ids = list(clips)
    # Opening a container is mostly file I/O, which threads overlap well.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(ids, pool.map(probe_clip, [clips[i] for i in ids]), strict=True))


@CORPORA.register("meld")
def meld_corpus(root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """The registry's entry: :func:`read_meld` with options checked by name."""
    check_options("MELD", read_meld, options)
    return read_meld(root, out, **options)
