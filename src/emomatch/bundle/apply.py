"""What ``emomatch predict`` does around the :class:`~emomatch.bundle.Predictor`: turning the
command's inputs (clips, folders, manifests, a sentence, a transcript CSV) into utterances or
windows, and writing the predictions as CSV, JSON or JSONL and as a plot over time."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.bundle.predictor import Prediction, Predictor
from emomatch.corpora.folder import read_transcripts
from emomatch.errors import DataError
from emomatch.extract.base import Utterance
from emomatch.files import atomic_path, atomic_write_text

FORMATS = ("csv", "json", "jsonl")
MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass
class Inputs:
    """Clips to predict one by one, and long recordings to cut into windows."""

    items: list[Utterance] = field(default_factory=list)
    #: (video, audio) of each recording to cut into windows
    recordings: list[tuple[Path | None, Path | None]] = field(default_factory=list)
    #: problems met while reading (a transcript line that matches nothing, ...)
    problems: list[str] = field(default_factory=list)


def _media_kind(path: Path) -> str:
    from emomatch.corpora.folder import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else ""


def timed_rows(rows: dict[str, dict[str, str]]) -> list[tuple[float, float, str]] | None:
    """The rows as (start, end, text) windows in time order when every row has both times."""
    if not rows or not all(r.get("start") and r.get("end") for r in rows.values()):
        return None
    return sorted((float(r["start"]), float(r["end"]), r.get("text", "")) for r in rows.values())


def gather_inputs(
    inputs: Sequence[Path],
    text: str | None = None,
    transcripts: Path | None = None,
    segments: float | None = None,
) -> Inputs:
    """Clips (video or audio files; an audio and a video file of the same name are one clip,
    given together or in a folder), folders of clips and manifests; ``text`` is the transcript
    of every clip without one (alone, it is a sentence to predict); ``transcripts`` a CSV of id
    (file name, with or without suffix), text and maybe start/end. Files become windows with
    ``segments`` (a width in seconds) or when the transcript has times."""
    from emomatch.corpora.folder import read_folder
    from emomatch.corpora.manifest import read_manifest
    from emomatch.extract.run import utterances_from_manifest

    found = Inputs()
    texts: dict[str, dict[str, str]] = {}
    if transcripts is not None:
        texts, found.problems = read_transcripts(transcripts)
    timed = timed_rows(texts)
    # An audio and a video file of the same name are one clip (as in a folder of clips).
    clips: list[dict[str, Path]] = []
    open_clip: dict[str, dict[str, Path]] = {}
    for path in inputs:
        kind = _media_kind(path) if path.is_file() else ""
        if kind:
            clip = open_clip.get(path.stem)
            if clip is None or kind in clip:
                clip = open_clip[path.stem] = {}
                clips.append(clip)
            clip[kind] = path
    if timed is not None and len(clips) != 1:
        raise DataError(
            f"{transcripts}: a transcript with start/end times cuts one recording into windows; "
            f"give exactly one recording (its audio and/or video file; got {len(clips)})"
        )
    placed: set[int] = set()
    for path in inputs:
        if path.is_dir():
            with tempfile.TemporaryDirectory(prefix="emomatch-predict-") as tmp:
                prepared = read_folder(
                    path, Path(tmp), str(transcripts) if transcripts else None, absolute_paths=True
                )
                found.problems += [p for p in prepared.problems if "matches no clip" not in p]
                found.items += utterances_from_manifest(read_manifest(prepared.manifest))
        elif not path.exists():
            raise DataError(f"input {path} does not exist")
        elif _media_kind(path):
            clip = next(c for c in clips if c.get(_media_kind(path)) == path)
            if id(clip) in placed:
                continue
            placed.add(id(clip))
            video, audio = clip.get("video"), clip.get("audio")
            if segments is not None or timed is not None:
                found.recordings.append((video, audio))
                continue
            row = texts.get(path.stem) or next(
                (texts[p.name] for p in clip.values() if p.name in texts), {}
            )
            if transcripts is not None and not row:
                found.problems.append(f"{path}: no line in {transcripts}")
            found.items.append(
                Utterance(id=path.stem, video=video, audio=audio, text=row.get("text", ""))
            )
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            found.items += utterances_from_manifest(read_manifest(path, complete=False))
        else:
            raise DataError(
                f"input {path}: not a folder, a manifest (.csv/.jsonl) or a media file "
                "(see `emomatch predict --help` for the suffixes)"
            )
    if text:
        found.items = [it if it.text.strip() else replace(it, text=text) for it in found.items]
        if not inputs:
            found.items.append(Utterance(id="text", text=text))
    if not found.items and not found.recordings:
        raise DataError("nothing to predict: give clips, folders, manifests or --text")
    return found


def predict_inputs(
    predictor: Predictor,
    found: Inputs,
    text: str | None = None,
    transcripts: Path | None = None,
    segments: float | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Every clip's prediction, then every recording's windows."""
    out = predictor.predict_items(found.items, progress=progress and len(found.items) > 1)
    timed = timed_rows(read_transcripts(transcripts)[0]) if transcripts is not None else None
    for video, audio in found.recordings:
        windows: Any = timed if timed is not None else text
        out += predictor.predict_segments(
            video=video,
            audio=audio,
            text=windows,
            width=segments if segments is not None else 5.0,
            progress=progress,
        )
    return out


def _csv_rows(predictions: Sequence[Prediction], labels: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for p in predictions:
        row: dict[str, Any] = {
            "id": p.id or "",
            "start": "" if p.start is None else p.start,
            "end": "" if p.end is None else p.end,
            "label": p.label or "",
            "modalities": "+".join(p.modalities),
        }
        for c in labels:
            row[f"p_{c}"] = f"{p.probabilities[c]:.6f}" if c in p.probabilities else ""
        row["missing"] = "; ".join(f"{m}: {r}" for m, r in p.missing.items())
        row["text"] = p.text or ""
        row["asr"] = int(p.asr)
        row["error"] = p.error or ""
        rows.append(row)
    return rows


def format_predictions(
    predictions: Sequence[Prediction], labels: Sequence[str], fmt: str = "csv"
) -> str:
    """The predictions as CSV (one row each, a ``p_<label>`` column per label), a JSON list or
    JSON lines."""
    if fmt == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in predictions)
    if fmt != "csv":
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    rows = _csv_rows(predictions, labels)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(rows[0]) if rows else ["id", "label"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_predictions(
    predictions: Sequence[Prediction], labels: Sequence[str], fmt: str, out: Path
) -> None:
    atomic_write_text(out, format_predictions(predictions, labels, fmt))


def plot_over_time(predictions: Sequence[Prediction], labels: Sequence[str], out: Path) -> Path:
    """Each label's probability against time (window centres), one line per label, with the
    windows' labels as a band below; a PNG."""
    timed = [p for p in predictions if p.start is not None and p.end is not None and p.label]
    if not timed:
        raise DataError(
            "--plot draws emotion over time: it needs windows (--segments WIDTH, or a "
            "transcript with start/end times)"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(p.start + p.end) / 2 for p in timed if p.start is not None and p.end is not None]
    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(9, 4.2), sharex=True, gridspec_kw={"height_ratios": [5, 1]}
    )
    colours = plt.get_cmap("tab10")
    for k, c in enumerate(labels):
        ax.plot(centres, [p.probabilities[c] for p in timed], marker="o", label=c, color=colours(k))
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="upper right", fontsize="small", ncols=min(len(labels), 4))
    ax.grid(alpha=0.3)
    for p in timed:
        assert p.start is not None and p.end is not None and p.label is not None
        k = list(labels).index(p.label)
        band.axvspan(p.start, p.end, color=colours(k), alpha=0.8)
    band.set_yticks([])
    band.set_xlabel("time (s)")
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def score_bundle(
    predictor: Predictor, data: str | Path, split: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """``emomatch evaluate BUNDLE DATA``: the bundle's metrics on labelled clips (a manifest
    with a ``label`` column; rows without a label are left out) or on a labelled feature store
    made with the bundle's extractor settings. ``split`` keeps the rows of that ``split`` value
    (a store's default: ``test``)."""
    from emomatch.corpora.manifest import read_manifest
    from emomatch.extract.run import utterances_from_manifest
    from emomatch.metrics import classification_metrics

    data = Path(data)
    labels = list(predictor.labels)
    if (data / "store.json").is_file():
        truth, guesses, failed, name = _score_store(predictor, data, split)
    elif data.is_file():
        df = read_manifest(data, complete=False)
        if split is not None:
            df = df[df["split"] == split]
        df = df[df["label"].str.strip() != ""]
        if df.empty:
            where = f" with split == {split!r}" if split is not None else ""
            raise DataError(f"manifest {data}: no row{where} has a label; nothing to score")
        unknown = sorted(set(df["label"]) - set(labels))
        if unknown:
            raise DataError(
                f"manifest {data}: label(s) {', '.join(unknown)} unknown to the model "
                f"(it knows {', '.join(labels)})"
            )
        df.attrs["path"] = str(data)
        found = predictor.predict_items(utterances_from_manifest(df), progress)
        scored = [(t, p) for t, p in zip(df["label"], found, strict=True) if p.label is not None]
        failed = [f"{p.id}: {p.error}" for p in found if p.label is None]
        if not scored:
            raise DataError(f"manifest {data}: no clip could be used, e.g. {failed[0]}")
        truth = [labels.index(t) for t, _ in scored]
        guesses = [labels.index(str(p.label)) for _, p in scored]
        name = split or "all"
    else:
        raise DataError(f"{data}: neither a labelled manifest (.csv/.jsonl) nor a feature store")
    metrics = classification_metrics(np.asarray(truth), np.asarray(guesses), len(labels))
    metrics.update(
        split=name,
        classes=labels,
        data=str(data),
        bundle=predictor.bundle.source,
        not_scored=len(failed),
        trained_on=predictor.trained_on,
    )
    if failed:
        metrics["not_scored_example"] = failed[0]
    return metrics


def _score_store(
    predictor: Predictor, path: Path, split: str | None
) -> tuple[list[int], list[int], list[str], str]:
    from emomatch.data import EvalBatches, FeatureBatches, select_split
    from emomatch.store import FeatureStore
    from emomatch.store.provenance import check_provenance, store_provenance

    store = FeatureStore(path)
    mods = list(predictor.modalities)
    for m in mods:
        if m not in store.modalities:
            raise DataError(f"store {path} has no {m} features; the model needs them")
    check_provenance(
        predictor.bundle.features, store_provenance(store, mods), where=f"store {path}"
    )
    if store.classes != predictor.labels:
        raise DataError(f"store {path} has classes {store.classes}, the model {predictor.labels}")
    name = split or "test"
    missing = str(predictor.bundle.meta.get("missing") or "drop")
    rows = select_split(store, "split", name, mods, True, missing)
    batches = FeatureBatches(rows, mods, with_labels=False)
    probs = []
    for key in EvalBatches(len(rows), 256):
        inputs = batches[key]["labeled"]["inputs"]
        probs.append(
            predictor.predict_features(
                {m: x.numpy() for m, (x, _) in inputs.items()},
                {m: n.numpy() for m, (_, n) in inputs.items()},
            )
        )
    guesses = np.concatenate(probs).argmax(1).tolist()
    return rows.labels().tolist(), guesses, [], name
