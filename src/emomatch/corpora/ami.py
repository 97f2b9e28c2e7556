"""The AMI meeting corpus as an unlabeled pool of fixed-width windows (the paper's protocol;
docs/corpora.md).

Each window: pick three consecutive words of one speaker at random (uniformly over every such
triple of every speaker of every meeting, so talkative speakers give more windows), centre a
window of ``width`` seconds on the middle word's midpoint, shift it right if it would start
before 0 (and left if it would pass the meeting's end, where meetings.xml gives a duration), so
every window has the same width. The window's text is that speaker's words whose midpoint lies in
the window; its audio is the speaker's headset channel and its video the speaker's close-up
camera, both cut to ``[start, end]`` by the extractors (AMI word times, headset WAVs and close-up
AVIs share the meeting's clock).

``windows`` is the number of windows in all (not per speaker). The paper balances the pool to
5,000 per class after pseudo-labelling, and windows in which the visual extractor finds no face
are dropped (recorded as a visual length of 0, i.e. missing, and left out of runs that use the
visual modality), so sample well above the balanced size.

Two files are written to ``out``: ``windows.csv``, every sampled window, written before any media
file is looked at, and ``manifest.csv``, the windows whose required media exist (a missing file
is one problem line with the number of windows it cost). Sampling is seeded and deterministic, so
the same options give the same windows and an interrupted extraction resumes on the same ids.

Rows have ``split`` and every ``fold_1..fold_<folds>`` field set to ``unlabeled``, so the AMI store
can serve as ``data.unlabeled_store`` whatever ``data.split_field`` the labeled corpus uses.

The agent -> close-up camera mapping is not in the words files. Default: a ``camera`` attribute on
the agent's ``<speaker>`` in meetings.xml where there is one (``Closeup3``, ``c3`` or ``3``),
else A->1, B->2, C->3, D->4 (an assumption: check a few close-ups of a real copy). The
``camera_map`` option overrides both for the agents it names.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.corpora.base import CORPORA, PreparedCorpus
from emomatch.corpora.manifest import write_manifest
from emomatch.errors import ConfigError, DataError

log = logging.getLogger(__name__)

UNLABELED_SPLIT = "unlabeled"
DEFAULT_CAMERAS: dict[str, int] = {"A": 1, "B": 2, "C": 3, "D": 4}
WINDOWS_FILE = "windows.csv"
MANIFEST_FILE = "manifest.csv"
MODALITY_COLUMNS = ("audio", "video")


@dataclass(frozen=True)
class AmiLayout:
    """Where each part of an AMI copy lies, relative to its root; one place to change for a
    copy unpacked differently. Patterns take ``meeting``, ``agent``, ``channel``, ``camera``."""

    words_dir: str = "words"
    words_file: str = "{meeting}.{agent}.words.xml"
    meetings_xml: str = "corpusResources/meetings.xml"
    media_dir: str = "amicorpus"
    audio: str = "{meeting}/audio/{meeting}.Headset-{channel}.wav"
    video: str = "{meeting}/video/{meeting}.Closeup{camera}.avi"

    def words_glob(self) -> str:
        return self.words_file.format(meeting="*", agent="*")

    def words_name(self) -> re.Pattern[str]:
        """Regex recovering meeting and agent from a words file name."""
        parts = re.split(r"(\{meeting\}|\{agent\})", self.words_file)
        regex = "".join(
            {"{meeting}": r"(?P<meeting>[^/]+?)", "{agent}": r"(?P<agent>[^./]+)"}.get(p)
            or re.escape(p)
            for p in parts
        )
        return re.compile(f"^{regex}$")


@dataclass(frozen=True)
class AmiOptions:
    """Options of the AMI reader (``emomatch prepare ami`` passes them as strings)."""

    #: window width in seconds: 7.2 to pair with IEMOCAP, 3.5 with MELD
    width: float = 7.2
    #: windows in all, over every speaker of every meeting used
    windows: int = 40000
    seed: int = 0
    #: meetings to use (None: every meeting with words files)
    meetings: tuple[str, ...] | None = None
    #: agent letter -> close-up camera index, overriding meetings.xml and the default
    camera_map: dict[str, int] = field(default_factory=dict)
    #: media a window must have to be kept; a missing file of another modality leaves it empty
    require: tuple[str, ...] = MODALITY_COLUMNS
    #: fold fields written (all ``unlabeled``) so any ``fold_k`` split field finds the pool
    folds: int = 10
    layout: AmiLayout = AmiLayout()


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"ami option {name}: {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"ami option {name}: must be a positive number, got {value!r}")
    return number


def _as_int(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        raise ConfigError(f"ami option {name}: {value!r} is not a whole number") from None
    if isinstance(value, float) and value != number:
        raise ConfigError(f"ami option {name}: {value!r} is not a whole number")
    if number < minimum:
        raise ConfigError(f"ami option {name}: must be at least {minimum}, got {value!r}")
    return number


def _as_names(name: str, value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(v).strip() for v in items if str(v).strip())
    if not names:
        raise ConfigError(f"ami option {name}: empty list")
    return names


def _camera_index(value: Any) -> int | None:
    """``3``, ``"3"``, ``"c3"``, ``"Closeup3"`` -> 3; anything else -> None."""
    match = re.fullmatch(r"\s*(?:closeup|c)?\s*(\d+)\s*", str(value), flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def _as_camera_map(value: Any) -> dict[str, int]:
    """A mapping or ``"A=1,B=2"``."""
    if isinstance(value, str):
        pairs: list[tuple[str, Any]] = []
        for item in value.split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ConfigError(
                    f"ami option camera_map: {item.strip()!r} is not AGENT=CAMERA (e.g. A=1,B=2)"
                )
            agent, camera = item.split("=", 1)
            pairs.append((agent, camera))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConfigError(f"ami option camera_map: expected a mapping or 'A=1,B=2', got {value!r}")
    cameras = {}
    for agent, camera in pairs:
        index = _camera_index(camera)
        if index is None:
            raise ConfigError(
                f"ami option camera_map: camera {camera!r} of agent {str(agent).strip()!r} "
                "is not a close-up index (1, c1 or Closeup1)"
            )
        cameras[str(agent).strip()] = index
    return cameras


def ami_options(**options: Any) -> AmiOptions:
    """Validated options; layout fields (``words_dir``, ``meetings_xml``, ``media_dir``,
    ``audio``, ``video``, ``words_file``) may be given directly."""
    layout_names = {f.name for f in fields(AmiLayout)}
    known = ({f.name for f in fields(AmiOptions)} - {"layout"}) | layout_names
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(
            f"unknown ami option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    layout = AmiLayout(**{k: str(v) for k, v in options.items() if k in layout_names})
    opts = AmiOptions(layout=layout)
    changes: dict[str, Any] = {}
    if "width" in options:
        changes["width"] = _as_float("width", options["width"])
    if "windows" in options:
        changes["windows"] = _as_int("windows", options["windows"], 1)
    if "seed" in options:
        changes["seed"] = _as_int("seed", options["seed"], 0)
    if options.get("meetings") is not None:
        changes["meetings"] = _as_names("meetings", options["meetings"])
    if options.get("camera_map") is not None:
        changes["camera_map"] = _as_camera_map(options["camera_map"])
    if "require" in options:
        require = () if not options["require"] else _as_names("require", options["require"])
        bad = [r for r in require if r not in MODALITY_COLUMNS]
        if bad:
            raise ConfigError(
                f"ami option require: {', '.join(bad)} is not one of {', '.join(MODALITY_COLUMNS)}"
            )
        changes["require"] = require
    if "folds" in options:
        changes["folds"] = _as_int("folds", options["folds"], 0)
    return replace(opts, **changes)


@dataclass(frozen=True)
class Participant:
    """One agent of one meeting, from meetings.xml."""

    meeting: str
    agent: str
    channel: str | None
    participant: str | None
    camera: int | None


@dataclass
class Transcript:
    """One speaker's timed words, in time order."""

    meeting: str
    agent: str
    starts: np.ndarray
    ends: np.ndarray
    words: list[str]

    @property
    def midpoints(self) -> np.ndarray:
        return (self.starts + self.ends) / 2

    def __len__(self) -> int:
        return len(self.words)


def read_meetings(path: Path) -> tuple[dict[str, dict[str, Participant]], dict[str, float]]:
    """Agents of each meeting (meeting -> agent -> Participant) and meeting durations (where
    meetings.xml gives them)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, LookupError) as exc:
        # LookupError: an XML declaration naming an encoding Python does not know
        raise DataError(f"{path}: malformed XML ({exc}); AMI needs it for channels") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    meetings: dict[str, dict[str, Participant]] = {}
    durations: dict[str, float] = {}
    for element in tree.getroot().iter("meeting"):
        name = element.get("observation")
        if not name:
            continue
        try:
            duration = float(element.get("duration", ""))
            if math.isfinite(duration) and duration > 0:
                durations[name] = duration
        except ValueError:
            pass
        agents = meetings.setdefault(name, {})
        for speaker in element.iter("speaker"):
            agent = speaker.get("nxt_agent")
            if not agent:
                continue
            camera = speaker.get("camera")
            agents[agent] = Participant(
                meeting=name,
                agent=agent,
                channel=speaker.get("channel") or None,
                participant=speaker.get("global_name") or None,
                camera=_camera_index(camera) if camera else None,
            )
    return meetings, durations


#: word times past this (116 days) are damage, not a meeting; they would overflow window ids
MAX_SECONDS = 1e7


def _time(element: ET.Element, name: str) -> float | None:
    try:
        value = float(element.get(name, ""))
    except ValueError:
        return None
    return value if 0.0 <= value <= MAX_SECONDS else None


def read_words(path: Path, meeting: str, agent: str) -> tuple[Transcript, Counter[str]]:
    """Timed words of one words.xml file; the counter says what was left out and why.

    Only ``<w>`` elements count: punctuation (``punc="true"``), words without both times and
    every other element (vocalsound, disfmarker, gap, ...) are left out; so are times that are
    negative or past :data:`MAX_SECONDS`. Raises :class:`ET.ParseError`, :class:`LookupError`
    (an unknown encoding declared) or :class:`OSError` for a file that cannot be read."""
    root = ET.parse(path).getroot()
    starts: list[float] = []
    ends: list[float] = []
    words: list[str] = []
    skipped: Counter[str] = Counter()
    for element in root.iter():
        if element is root:
            continue
        tag = element.tag.rsplit("}", 1)[-1]
        if tag != "w":
            skipped[tag] += 1
            continue
        if element.get("punc", "").lower() == "true":
            skipped["punctuation"] += 1
            continue
        text = " ".join((element.text or "").split())
        start, end = _time(element, "starttime"), _time(element, "endtime")
        if start is None or end is None or end < start:
            skipped["untimed word"] += 1
            continue
        if not text:
            skipped["empty word"] += 1
            continue
        starts.append(start)
        ends.append(end)
        words.append(text)
    s, e = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    # Time order of midpoints is what "consecutive" and "inside the window" both use.
    order = np.argsort((s + e) / 2, kind="stable")
    return (
        Transcript(meeting, agent, s[order], e[order], [words[i] for i in order]),
        skipped,
    )


@dataclass(frozen=True)
class Window:
    meeting: str
    agent: str
    start: float
    end: float
    centre: float
    text: str

    @property
    def id(self) -> str:
        return f"{self.meeting}_{self.agent}_{round(self.start * 1000)}"


def place_window(centre: float, width: float, duration: float | None = None) -> tuple[float, float]:
    """``[start, end]`` of ``width`` centred on ``centre``, shifted to lie in
    ``[0, duration]`` (kept at full width; ``duration`` shorter than ``width`` starts at 0)."""
    start = centre - width / 2
    if duration is not None and start + width > duration:
        start = duration - width
    start = round(max(0.0, start), 3)
    return start, round(start + width, 3)


def words_in(transcript: Transcript, start: float, end: float) -> str:
    """The speaker's words whose midpoint lies in ``[start, end)``, in time order."""
    mids = transcript.midpoints
    lo, hi = np.searchsorted(mids, start, "left"), np.searchsorted(mids, end, "left")
    return " ".join(transcript.words[lo:hi])


def sample_windows(
    transcripts: Sequence[Transcript],
    width: float,
    count: int,
    seed: int,
    durations: Mapping[str, float] | None = None,
) -> list[Window]:
    """``count`` distinct windows (fewer if the transcripts do not hold that many), each on 3
    consecutive words of one speaker drawn uniformly over all such triples without
    replacement. Deterministic in ``seed`` and the order of ``transcripts``."""
    durations = durations or {}
    triples = np.array([max(0, len(t) - 2) for t in transcripts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(triples)])
    total = int(offsets[-1])
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    windows: list[Window] = []
    seen: set[str] = set()
    for pick in order:
        if len(windows) >= count:
            break
        which = int(np.searchsorted(offsets, pick, "right") - 1)
        transcript = transcripts[which]
        middle = int(pick - offsets[which]) + 1
        centre = float(transcript.midpoints[middle])
        start, end = place_window(centre, width, durations.get(transcript.meeting))
        window = Window(
            transcript.meeting,
            transcript.agent,
            start,
            end,
            round(centre, 3),
            words_in(transcript, start, end),
        )
        # Two triples near a meeting's start both clamp to 0: one window, not two.
        if window.id in seen:
            continue
        seen.add(window.id)
        windows.append(window)
    return windows


def _check_root(root: Path, layout: AmiLayout) -> None:
    if not root.is_dir():
        raise DataError(f"AMI root {root} is not a folder")
    expected = [layout.words_dir, layout.meetings_xml]
    absent = [p for p in expected if not (root / p).exists()]
    if absent:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
        raise DataError(
            f"{root} does not look like an AMI copy: {', '.join(absent)} not found "
            f"(expected {layout.words_dir}/ with {layout.words_glob()} and "
            f"{layout.meetings_xml}; found: {found}). Set words_dir / meetings_xml if your "
            "copy is unpacked differently."
        )


def _camera(agent: Participant, camera_map: Mapping[str, int]) -> tuple[int | None, str]:
    if agent.agent in camera_map:
        return camera_map[agent.agent], "camera_map option"
    if agent.camera is not None:
        return agent.camera, "meetings.xml"
    if agent.agent in DEFAULT_CAMERAS:
        return DEFAULT_CAMERAS[agent.agent], "default A-D -> 1-4"
    return None, "none"


def prepare_ami(root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """Sample the AMI window pool: ``out/windows.csv`` (every window, before any media file
    is looked at) and ``out/manifest.csv`` (windows whose required media exist)."""
    opts = ami_options(**options)
    layout = opts.layout
    root, out = Path(root).resolve(), Path(out)
    _check_root(root, layout)
    problems: list[str] = []
    counts: dict[str, Any] = {}

    meetings, durations = read_meetings(root / layout.meetings_xml)
    name_pattern = layout.words_name()
    files: dict[tuple[str, str], Path] = {}
    for path in sorted((root / layout.words_dir).glob(layout.words_glob())):
        match = name_pattern.match(path.name)
        if match:
            files[(match["meeting"], match["agent"])] = path
    on_disk = sorted({m for m, _ in files})
    if opts.meetings is not None:
        unknown = [m for m in opts.meetings if m not in on_disk]
        if unknown:
            raise DataError(
                f"ami option meetings: no words files for {', '.join(unknown)} in "
                f"{root / layout.words_dir} ({len(on_disk)} meetings there)"
            )
        wanted = set(opts.meetings)
        files = {k: v for k, v in files.items() if k[0] in wanted}
    if not files:
        raise DataError(f"no words files {layout.words_glob()} in {root / layout.words_dir}")

    transcripts: list[Transcript] = []
    agents: dict[tuple[str, str], Participant] = {}
    skipped: Counter[str] = Counter()
    for (meeting, agent), path in sorted(files.items()):
        rel = path.relative_to(root)
        participant = meetings.get(meeting, {}).get(agent)
        if participant is None:
            problems.append(
                f"{rel}: agent {agent} of meeting {meeting} is not in {layout.meetings_xml}; "
                "its words are skipped"
            )
            continue
        try:
            transcript, left_out = read_words(path, meeting, agent)
        except (ET.ParseError, LookupError) as exc:
            problems.append(f"{rel}: malformed XML ({exc}); its words are skipped")
            continue
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc}); its words are skipped")
            continue
        skipped.update(left_out)
        if len(transcript) < 3:
            problems.append(f"{rel}: {len(transcript)} timed word(s), too few for a window")
            continue
        transcripts.append(transcript)
        agents[(meeting, agent)] = participant
    counts["meetings"] = len({t.meeting for t in transcripts})
    counts["speakers"] = len(transcripts)
    counts["words"] = int(sum(len(t) for t in transcripts))
    counts["left_out_elements"] = dict(sorted(skipped.items()))
    if not transcripts:
        raise DataError(f"no usable words files in {root / layout.words_dir}: {problems}")

    windows = sample_windows(transcripts, opts.width, opts.windows, opts.seed, durations)
    counts["windows_requested"] = opts.windows
    counts["windows_sampled"] = len(windows)
    if len(windows) < opts.windows:
        problems.append(
            f"only {len(windows)} distinct windows of {opts.width} s could be sampled "
            f"({opts.windows} requested)"
        )

    cameras = {key: _camera(p, opts.camera_map) for key, p in agents.items()}
    counts["camera_source"] = dict(Counter(source for _, source in cameras.values()))
    media = root / layout.media_dir
    rows = []
    for w in windows:
        p = agents[(w.meeting, w.agent)]
        camera = cameras[(w.meeting, w.agent)][0]
        fmt = {"meeting": w.meeting, "agent": w.agent, "channel": p.channel, "camera": camera}
        rows.append(
            {
                "id": w.id,
                "audio": str(media / layout.audio.format(**fmt)) if p.channel else "",
                "video": str(media / layout.video.format(**fmt)) if camera else "",
                "text": w.text,
                "start": w.start,
                "end": w.end,
                "speaker": p.participant or f"{w.meeting}_{w.agent}",
                "label": "",
                "split": UNLABELED_SPLIT,
                **{f"fold_{k}": UNLABELED_SPLIT for k in range(1, opts.folds + 1)},
                "meeting": w.meeting,
                "agent": w.agent,
                "channel": p.channel or "",
                "camera": camera or "",
                "centre": w.centre,
            }
        )
    for (meeting, agent), p in sorted(agents.items()):
        if p.participant is None:
            problems.append(
                f"{layout.meetings_xml}: meeting {meeting} agent {agent} has no global_name; "
                f"speaker {meeting}_{agent} used"
            )
        if p.channel is None:
            problems.append(
                f"{layout.meetings_xml}: meeting {meeting} agent {agent} has no headset channel"
            )
        if cameras[(meeting, agent)][0] is None:
            problems.append(
                f"meeting {meeting} agent {agent}: no close-up camera (not in camera_map)"
            )
    columns = [
        "id",
        "audio",
        "video",
        "text",
        "start",
        "end",
        "speaker",
        "label",
        "split",
        *[f"fold_{k}" for k in range(1, opts.folds + 1)],
        "meeting",
        "agent",
        "channel",
        "camera",
        "centre",
    ]
    table = pd.DataFrame(rows, columns=columns)
    out.mkdir(parents=True, exist_ok=True)
    # Before any media is looked at: this is what a long extraction is planned and resumed from.
    write_manifest(table, out / WINDOWS_FILE)

    keep, missing_counts = _drop_missing_media(table, root, opts.require, problems)
    counts.update(missing_counts)
    manifest = write_manifest(table[keep], out / MANIFEST_FILE)
    kept = int(keep.sum())
    counts["rows"] = kept
    counts["windows_per_meeting"] = dict(Counter(table.loc[keep, "meeting"]))
    log.info("AMI: %d windows of %d sampled kept in %s", kept, len(table), manifest)
    return PreparedCorpus(
        manifest=manifest, rows=kept, classes=[], problems=problems, counts=counts
    )


def _drop_missing_media(
    table: pd.DataFrame, root: Path, require: Iterable[str], problems: list[str]
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows to keep: every required media file exists. Each missing file is one problem line
    with the number of windows it touches; optional media that is missing is blanked."""
    require = set(require)
    keep = np.ones(len(table), dtype=bool)
    counts: dict[str, int] = {}
    for column in MODALITY_COLUMNS:
        values = table[column].to_numpy()
        exists = {v: Path(v).is_file() for v in set(values) if v}
        absent = np.array([bool(v) and not exists[v] for v in values], dtype=bool)
        empty = np.array([not v for v in values], dtype=bool)
        for value in sorted(v for v, ok in exists.items() if not ok):
            n = int((values == value).sum())
            shown = Path(value).relative_to(root) if Path(value).is_relative_to(root) else value
            action = "skipped" if column in require else f"kept without {column}"
            problems.append(f"{shown}: {column} file does not exist; {n} window(s) {action}")
        if column in require:
            keep &= ~(absent | empty)
            counts[f"skipped_missing_{column}"] = int((absent | empty).sum())
        else:
            table.loc[absent, column] = ""
            counts[f"missing_{column}"] = int(absent.sum())
    return keep, counts


CORPORA.register("ami")(prepare_ami)
