"""IEMOCAP as released (``IEMOCAP_full_release/``) -> manifest with speaker-independent folds.

One row per annotated utterance whose majority label the chosen mapping keeps:

- ``audio``: the utterance's own WAV (``sentences/wav``), a whole file; or, with
  ``audio="dialog"``, the whole dialog's WAV (both actors) cut like the video;
- ``video``: the whole dialog's AVI, with ``start``/``end`` (seconds, from EmoEvaluation) to cut
  and ``crop`` ("left"/"right") naming the half of the frame that shows the speaker;
- ``text`` from the dialog's transcription, ``speaker`` ``Ses0n<g>``, ``session`` n;
- ``audio_start``/``audio_end``: the segment of the audio file (empty: the whole file).

``start``/``end`` are times in the dialog, right for the video and for the dialog WAV but not
for an utterance WAV; ``audio_start``/``audio_end`` say so for an extraction that reads them.
One that applies ``start``/``end`` to every medium needs ``audio="dialog"``.

Utterances whose WAV is missing are skipped and reported (a row without its audio would only be
dropped later by every A+V+L run); a missing dialog video or transcription keeps the rows with
that modality empty, also reported. Media paths are written relative to the manifest's folder
(or absolute with ``absolute_paths``), so the manifest works wherever extraction runs from.

Folds (the paper's protocol, docs/corpora.md): fold k holds out the k-th session present; its
female speaker is the validation split and its male speaker the test split (``both_orders`` adds
folds with the roles swapped, numbered after the first ones, so fold_1.. keep their meaning).
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
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
    int_list_option,
    layout_with,
    media_path,
)
from emomatch.corpora.manifest import write_manifest
from emomatch.corpora.textfile import CP1252_FALLBACK
from emomatch.errors import DataError

log = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = "train", "validation", "test"


@dataclass(frozen=True)
class IemocapLayout:
    """Every path the reader assumes, relative to the root; ``{session}`` is 1..5, ``{dialog}``
    e.g. ``Ses01F_impro01``, ``{utterance}`` e.g. ``Ses01F_impro01_F000``. A differently
    unpacked copy changes these (``layout={"video": ...}``) and nothing else."""

    session: str = "Session{session}"
    evaluation_dir: str = "Session{session}/dialog/EmoEvaluation"
    transcription: str = "Session{session}/dialog/transcriptions/{dialog}.txt"
    wav: str = "Session{session}/sentences/wav/{dialog}/{utterance}.wav"
    dialog_wav: str = "Session{session}/dialog/wav/{dialog}.wav"
    video: str = "Session{session}/dialog/avi/DivX/{dialog}.avi"


#: every majority-label code IEMOCAP's EmoEvaluation files use
IEMOCAP_CODES = ("neu", "hap", "exc", "ang", "sad", "fru", "fea", "sur", "dis", "oth", "xxx")

LABEL_MAPPINGS: dict[str, dict[str, str]] = {
    # the paper's task: happy and excited merged
    "4class": {"neu": "neutral", "ang": "angry", "sad": "sad", "hap": "happy", "exc": "happy"},
    "6class": {
        "neu": "neutral",
        "hap": "happy",
        "ang": "angry",
        "sad": "sad",
        "exc": "excited",
        "fru": "frustrated",
    },
}

#: what the full release gives with the 4-class mapping (the paper's Table 1)
FULL_RELEASE_4CLASS = {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
FULL_RELEASE_SESSIONS = (1, 2, 3, 4, 5)

_NUMBER = r"\d+(?:\.\d*)?"
HEADER_LINE = re.compile(
    rf"^\[\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})\s*\]\s+"
    r"(?P<id>\S+)\s+(?P<code>\S+)\s+"
    rf"\[\s*(?P<val>{_NUMBER}),\s*(?P<act>{_NUMBER}),\s*(?P<dom>{_NUMBER})\s*\]\s*$"
)
UTTERANCE_ID = re.compile(
    r"^(?P<dialog>Ses(?P<session>\d\d)(?P<lead>[FM])_\S+)_(?P<gender>[FM])\d{3}$"
)
# Annotator detail lines ("C-E1:\t...", "A-E3:\t...") never name an utterance; a line that does
# but fails HEADER_LINE is a damaged header, not something to ignore.
_LOOKS_LIKE_HEADER = re.compile(r"^\s*\[|Ses\d\d[FM]_\S+_[FM]\d{3}")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
TRANSCRIPT_LINE = re.compile(r"^(?P<id>\S+)\s+\[[^\]]*\]:\s?(?P<text>.*)$")


@dataclass(frozen=True)
class Annotation:
    """One header line of an EmoEvaluation file."""

    id: str
    dialog: str
    session: int
    gender: str
    lead: str
    code: str
    start: float
    end: float
    valence: float
    activation: float
    dominance: float


def label_mapping(labels: str | Mapping[str, str]) -> dict[str, str]:
    """IEMOCAP code -> class name: "4class", "6class" or a user mapping such as
    ``{"neu": "neutral", "fru": "angry"}`` (codes left out are not in the manifest)."""
    if isinstance(labels, str):
        if labels not in LABEL_MAPPINGS:
            raise DataError(
                f"IEMOCAP labels option {labels!r}: expected one of "
                f"{', '.join(LABEL_MAPPINGS)} or a mapping from IEMOCAP codes to class names"
            )
        return dict(LABEL_MAPPINGS[labels])
    mapping = {str(k): str(v) for k, v in labels.items()}
    unknown = sorted(set(mapping) - set(IEMOCAP_CODES))
    if unknown:
        raise DataError(
            f"IEMOCAP label mapping: unknown code(s) {', '.join(unknown)}; "
            f"IEMOCAP uses {', '.join(IEMOCAP_CODES)}"
        )
    empty = sorted(k for k, v in mapping.items() if not v.strip())
    if not mapping or empty:
        raise DataError(f"IEMOCAP label mapping: every code needs a class name (empty: {empty})")
    return mapping


def parse_evaluation(path: Path, problems: list[str]) -> list[Annotation]:
    """Header lines of one EmoEvaluation file; a damaged one is reported with file and line and
    skipped, the rest of the file is still read."""
    found: list[Annotation] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or exc}); its utterances skipped")
        return found
    # utf-8-sig: a byte-order mark (a file saved on Windows) must not damage the first header;
    # newline=None: lines end at \n, \r\n or \r, as in any editor
    with io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=None) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("%"):
                continue
            match = HEADER_LINE.match(line)
            if match is None:
                if _LOOKS_LIKE_HEADER.search(line):
                    problems.append(f"{path}:{number}: cannot parse header line {line.strip()!r}")
                continue
            uid, code = match["id"], match["code"]
            id_match = UTTERANCE_ID.match(uid)
            if id_match is None:
                problems.append(
                    f"{path}:{number}: utterance id {uid!r} is not of the form "
                    "Ses0<n><F|M>_<name>_<F|M><3 digits>"
                )
                continue
            if id_match["dialog"] != path.stem:
                problems.append(
                    f"{path}:{number}: utterance {uid} does not belong to dialog {path.stem}"
                )
                continue
            if code not in IEMOCAP_CODES:
                problems.append(
                    f"{path}:{number}: unknown label {code!r} for {uid} "
                    f"(IEMOCAP uses {', '.join(IEMOCAP_CODES)})"
                )
                continue
            start, end = float(match["start"]), float(match["end"])
            # The pattern admits only digits, but a few hundred of them overflow to inf.
            huge = [
                name
                for name in ("start", "end", "val", "act", "dom")
                if not math.isfinite(float(match[name]))
            ]
            if huge:
                problems.append(
                    f"{path}:{number}: {uid}: {', '.join(huge)} out of range "
                    f"({match[huge[0]][:20]}...)"
                )
                continue
            if end <= start:
                problems.append(f"{path}:{number}: {uid} ends ({end}) before it starts ({start})")
                continue
            found.append(
                Annotation(
                    id=uid,
                    dialog=id_match["dialog"],
                    session=int(id_match["session"]),
                    gender=id_match["gender"],
                    lead=id_match["lead"],
                    code=code,
                    start=start,
                    end=end,
                    valence=float(match["val"]),
                    activation=float(match["act"]),
                    dominance=float(match["dom"]),
                )
            )
    return found


def parse_transcription(path: Path, problems: list[str] | None = None) -> dict[str, str]:
    """Utterance id -> text of one transcription file; whitespace runs become one space.

    A line that is not UTF-8 is read as Windows-1252 and reported in ``problems`` with its
    line, so an odd character in the text never passes unnoticed."""
    texts: dict[str, str] = {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        if problems is not None:
            problems.append(f"{path}: cannot be read ({exc.strerror or exc}); text left empty")
        return texts
    # Split like text mode does (\n, \r\n or a lone \r), but decode line by line.
    for number, raw in enumerate(_LINE_BREAK.split(data), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8", CP1252_FALLBACK)
            if problems is not None:
                problems.append(
                    f"{path}:{number}: byte 0x{raw[exc.start]:02x} is not UTF-8, "
                    "read as Windows-1252; check the text"
                )
        match = TRANSCRIPT_LINE.match(line.strip())
        if match is not None:
            texts[match["id"]] = " ".join(match["text"].split())
    return texts


def speaker_of(session: int, gender: str) -> str:
    return f"Ses{session:02d}{gender}"


def crop_of(annotation: Annotation) -> str:
    # The actor of the dialog's own gender letter (Ses01**F**_...) sits on the left half.
    return "left" if annotation.gender == annotation.lead else "right"


def speaker_folds(sessions: list[int], both_orders: bool = False) -> list[tuple[int, str, str]]:
    """(held-out session, validation speaker, test speaker) per fold, fold 1 first."""
    folds = [(s, speaker_of(s, "F"), speaker_of(s, "M")) for s in sessions]
    if both_orders:
        folds += [(s, test, valid) for s, valid, test in list(folds)]
    return folds


def write_fold_files(out: Path, ids: pd.Series, folds: Mapping[str, pd.Series]) -> list[Path]:
    """``out/folds/fold_k.csv`` (id,split) per fold; stale fold files of an earlier run with
    more folds are removed so the folder always matches the manifest."""
    folder = out / "folds"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("fold_*.csv"):
        if old.stem not in folds:
            old.unlink()
    paths = []
    for name, splits in folds.items():
        path = folder / f"{name}.csv"
        pd.DataFrame({"id": ids.to_numpy(), "split": splits.to_numpy()}).to_csv(path, index=False)
        paths.append(path)
    return paths


def _layout(layout: IemocapLayout | Mapping[str, str] | None) -> IemocapLayout:
    if isinstance(layout, IemocapLayout):
        return layout
    return layout_with(IemocapLayout(), layout or {}, "IEMOCAP")


def find_sessions(root: Path, layout: IemocapLayout) -> list[int]:
    """Sessions with an EmoEvaluation folder; an error that shows what is there otherwise."""
    if not root.is_dir():
        raise DataError(f"IEMOCAP root {root} is not a folder")
    sessions = [
        s for s in range(1, 10) if (root / layout.evaluation_dir.format(session=s)).is_dir()
    ]
    if sessions:
        return sessions
    entries = sorted(p.name for p in root.iterdir())
    shown = ", ".join(entries[:12]) + (", ..." if len(entries) > 12 else "") or "nothing"
    hint = ""
    nested = [p for p in root.iterdir() if p.is_dir() and (p / "Session1").is_dir()]
    if nested:
        hint = f"; did you mean {nested[0]}?"
    raise DataError(
        f"{root} is not an IEMOCAP release: expected folder(s) "
        f"{root / layout.evaluation_dir.format(session=1)} (Session1..Session5), "
        f"found: {shown}{hint}"
    )


def read_iemocap(
    root: Path,
    out: Path,
    labels: str | Mapping[str, str] = "4class",
    both_orders: bool | str = False,
    sessions: list[int] | None = None,
    layout: IemocapLayout | Mapping[str, str] | None = None,
    absolute_paths: bool | str = False,
    audio: str = "sentences",
) -> PreparedCorpus:
    """Write ``out/manifest.csv`` (with ``fold_k`` columns) and ``out/folds/fold_k.csv``."""
    root, out = Path(root), Path(out)
    mapping = label_mapping(labels)
    swap = flag_option(both_orders, "IEMOCAP", "both_orders")
    absolute = flag_option(absolute_paths, "IEMOCAP", "absolute_paths")
    if audio not in ("sentences", "dialog"):
        raise DataError(f"IEMOCAP option audio: expected 'sentences' or 'dialog', got {audio!r}")
    wav_pattern = "wav" if audio == "sentences" else "dialog_wav"
    paths = _layout(layout)
    present = find_sessions(root, paths)
    if sessions is not None:
        wanted = sorted(set(int_list_option(sessions, "IEMOCAP", "sessions", 1)))
        absent = [s for s in wanted if s not in present]
        if absent:
            raise DataError(
                f"IEMOCAP session(s) {absent} requested but not found under {root} "
                f"(found sessions {present})"
            )
        present = wanted
    problems: list[str] = []
    annotations: list[Annotation] = []
    for session in present:
        folder = root / paths.evaluation_dir.format(session=session)
        files = sorted(
            p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith(".")
        )
        if not files:
            problems.append(f"{folder}: no EmoEvaluation files")
        for path in files:
            for a in parse_evaluation(path, problems):
                if a.session != session:
                    problems.append(f"{path}: {a.id} belongs to session {a.session}, skipped")
                    continue
                annotations.append(a)

    rows: list[dict[str, Any]] = []
    excluded: Counter[str] = Counter()
    seen: set[str] = set()
    transcripts: dict[str, dict[str, str] | None] = {}
    videos: dict[str, Path | None] = {}
    skipped_audio = 0
    for a in annotations:
        if a.id in seen:
            problems.append(f"{a.id}: annotated twice, the first is kept")
            continue
        seen.add(a.id)
        if a.code not in mapping:
            excluded[a.code] += 1
            continue
        names = {"session": a.session, "dialog": a.dialog, "utterance": a.id}
        wav = root / getattr(paths, wav_pattern).format(**names)
        if not wav.is_file():
            problems.append(f"{a.id}: audio {wav} is missing, utterance skipped")
            skipped_audio += 1
            continue
        if a.dialog not in transcripts:
            tpath = root / paths.transcription.format(**names)
            if tpath.is_file():
                transcripts[a.dialog] = parse_transcription(tpath, problems)
            else:
                transcripts[a.dialog] = None
                problems.append(f"{a.dialog}: transcription {tpath} is missing, text left empty")
        if a.dialog not in videos:
            vpath = root / paths.video.format(**names)
            videos[a.dialog] = vpath if vpath.is_file() else None
            if videos[a.dialog] is None:
                problems.append(f"{a.dialog}: video {vpath} is missing, video left empty")
        texts = transcripts[a.dialog]
        text = ""
        if texts is not None:
            if a.id not in texts:
                problems.append(f"{a.id}: no transcription line, text left empty")
            else:
                text = texts[a.id]
                if not text:
                    problems.append(f"{a.id}: empty transcription, text left empty")
        video = videos[a.dialog]
        rows.append(
            {
                "id": a.id,
                "audio": media_path(wav, out, absolute),
                "video": media_path(video, out, absolute) if video is not None else "",
                "text": text,
                "start": a.start,
                "end": a.end,
                "speaker": speaker_of(a.session, a.gender),
                "label": mapping[a.code],
                "split": "",
                "crop": crop_of(a),
                "audio_start": a.start if audio == "dialog" else None,
                "audio_end": a.end if audio == "dialog" else None,
                "session": a.session,
                "dialog": a.dialog,
                "emotion_code": a.code,
                "valence": a.valence,
                "activation": a.activation,
                "dominance": a.dominance,
            }
        )
    if not rows:
        raise DataError(
            f"IEMOCAP under {root}: no utterance with a label among {sorted(mapping)} "
            f"(sessions {present}); problems: {'; '.join(problems[:5]) or 'none'}"
        )
    df = pd.DataFrame(rows)

    fold_specs = speaker_folds(present, swap) if len(present) > 1 else []
    if not fold_specs:
        problems.append(
            f"only session(s) {present}: speaker-independent folds need two or more sessions; "
            "every row is in the train split"
        )
    fold_columns: dict[str, pd.Series] = {}
    for k, (_session, valid, test) in enumerate(fold_specs, start=1):
        split = pd.Series(TRAIN, index=df.index)
        split[df["speaker"] == valid] = VALIDATION
        split[df["speaker"] == test] = TEST
        fold_columns[f"fold_{k}"] = split
        df[f"fold_{k}"] = split
    df["split"] = fold_columns["fold_1"] if fold_columns else TRAIN

    out.mkdir(parents=True, exist_ok=True)
    manifest = write_manifest(df, out / "manifest.csv")
    fold_paths = write_fold_files(out, df["id"], fold_columns)

    per_label = dict(sorted(Counter(df["label"]).items()))
    counts: dict[str, Any] = {
        "rows": len(df),
        "label": per_label,
        "split": dict(sorted(Counter(df["split"]).items())),
        "speaker": dict(sorted(Counter(df["speaker"]).items())),
        "sessions": present,
        "annotated": len(seen),
        "excluded_by_mapping": dict(sorted(excluded.items())),
        "skipped_missing_audio": skipped_audio,
        "folds": {
            f"fold_{k}": {"held_out_session": s, VALIDATION: v, TEST: t}
            for k, (s, v, t) in enumerate(fold_specs, start=1)
        },
    }
    if tuple(present) == FULL_RELEASE_SESSIONS and mapping == LABEL_MAPPINGS["4class"]:
        problems.extend(_check_full_release(per_label, len(df)))
        counts["full_release_check"] = "ok" if per_label == FULL_RELEASE_4CLASS else "differs"
    if problems:
        log.warning(
            "IEMOCAP: %d problem(s), listed in %s", len(problems), Path(out) / PROBLEMS_FILE
        )
    return PreparedCorpus(
        manifest=manifest,
        rows=len(df),
        classes=sorted(set(mapping.values())),
        folds=fold_paths,
        problems=problems,
        counts=counts,
    )


@CORPORA.register("iemocap")
def iemocap_corpus(root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """The registry's entry: :func:`read_iemocap` with options checked by name."""
    check_options("IEMOCAP", read_iemocap, options)
    return read_iemocap(root, out, **options)


def _check_full_release(found: Mapping[str, int], total: int) -> list[str]:
    """Difference from the published 4-class counts, one line per class that differs."""
    expected_total = sum(FULL_RELEASE_4CLASS.values())
    lines = []
    if total != expected_total:
        lines.append(
            f"count check: the full IEMOCAP release gives {expected_total} utterances in the "
            f"4-class task, this copy gives {total}"
        )
    for label, expected in FULL_RELEASE_4CLASS.items():
        if found.get(label, 0) != expected:
            lines.append(f"count check: {label}: expected {expected}, found {found.get(label, 0)}")
    return lines
