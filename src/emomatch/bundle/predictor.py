"""Applying a bundle to new recordings: :class:`Predictor`, its entry points (one clip, a
manifest, windows of a long recording, features) over the preprocess / forward / postprocess
stages of :mod:`emomatch.bundle.preprocess`, :mod:`~emomatch.bundle.forward` and
:mod:`~emomatch.bundle.postprocess`."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emomatch.bundle.card import synthetic_warning, trained_on
from emomatch.bundle.format import Bundle, BundleError, read_bundle
from emomatch.bundle.forward import BundleEnsemble
from emomatch.bundle.postprocess import Prediction, to_predictions
from emomatch.bundle.preprocess import Preprocessor, feature_inputs
from emomatch.errors import DataError
from emomatch.extract.base import Utterance

if TYPE_CHECKING:
    from emomatch.extract.base import Extractor

log = logging.getLogger(__name__)

#: utterances extracted and classified together
DEFAULT_BATCH = 16
#: narrowest window of emotion over time, seconds: shorter ones hold no syllable and no facial
#: movement (the service's shortest clip), and an hour cut that fine is millions of windows; a
#: stub this short at the end of a recording joins the window before it, so that the windows
#: still cover the whole recording
MIN_WINDOW_SECONDS = 0.2

#: a timed transcript: (start, end, text) per segment, seconds
TimedText = Sequence[tuple[float, float, str]]


def media_duration(path: str | Path) -> float:
    """Seconds of a recording: its audio stream's, else the container's (a silent video)."""
    from emomatch.extract.audio import AudioError, media_seconds

    path = Path(path)
    try:
        return media_seconds(path)
    except AudioError:
        if not path.is_file():
            raise
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return float(container.duration / av.time_base)
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, IndexError) as exc:
        raise DataError(f"{path}: corrupt or unreadable media ({exc})") from None
    raise DataError(f"{path}: the file does not say how long it is")


class Predictor:
    """A loaded bundle, ready to predict: see :func:`load`.

    A pipeline of three stages, as transformers' pipelines split theirs: the
    :class:`~emomatch.bundle.preprocess.Preprocessor` (clips -> features, as the training
    features were made), the :class:`~emomatch.bundle.forward.BundleEnsemble` (features ->
    class probabilities, the members averaged) and
    :func:`~emomatch.bundle.postprocess.to_predictions` (probabilities -> answers)."""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "cpu",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        transcribe: bool | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        import torch

        from emomatch.config import ModelConfig

        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        self.bundle = bundle
        self.labels: list[str] = bundle.labels
        self.modalities: list[str] = bundle.modalities
        self.shapes = bundle.shapes
        self.batch_size = batch_size
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise DataError(f"device {device!r} is not a torch device ({exc})") from None
        try:
            model_cfg = ModelConfig.model_validate(bundle.config["model"])
        except ValueError as exc:
            raise BundleError(f"{bundle.source}: config.yaml model section: {exc}") from None
        self.ensemble = BundleEnsemble(bundle, model_cfg, self.device)
        self.preprocess = Preprocessor(bundle, str(self.device), options, transcribe)
        #: what the model was trained on, in one line (corpus, synthetic or real, language)
        self.trained_on = trained_on(bundle.meta)
        #: set for a model trained on generated data: said (logged) once here, at load
        self.warning = synthetic_warning(bundle.meta)
        if self.warning is not None:
            log.warning("%s", self.warning)

    @property
    def extractors(self) -> dict[str, Extractor]:
        """One extractor per modality, as the training features were made."""
        return self.preprocess.extractors

    def predict_features(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Class probabilities (n x labels) of features already extracted with the model's
        settings: ``features[m]`` is (n, *shape of m); ``lengths[m]`` the valid frames/words
        (default: up to the last non-zero frame; 0 marks the modality missing). A modality left
        out of ``features`` is missing for every row."""
        shapes = {m: self.shapes[m] for m in self.modalities}
        return self.ensemble(*feature_inputs(features, lengths, shapes))

    def _batch(self, items: list[Utterance]) -> list[Prediction]:
        inputs = self.preprocess(items)
        probs = np.zeros((len(inputs.items), len(self.labels)), np.float32)
        usable = inputs.usable()
        if usable:
            probs[usable] = self.ensemble(
                {m: a[usable] for m, a in inputs.arrays.items()},
                {m: v[usable] for m, v in inputs.lengths.items()},
            )
        return to_predictions(
            inputs.items, probs, inputs.missing, inputs.asr, self.labels, self.modalities
        )

    def predict_items(self, items: Sequence[Utterance], progress: bool = False) -> list[Prediction]:
        """Predictions of many utterances, ``batch_size`` at a time (a bar on stderr with
        ``progress``)."""
        from tqdm import tqdm

        self.extractors  # noqa: B018 - fails at once, before any work, for a features-only model
        out: list[Prediction] = []
        with tqdm(total=len(items), unit="clip", disable=not progress, desc="predict") as bar:
            for begin in range(0, len(items), self.batch_size):
                chunk = list(items[begin : begin + self.batch_size])
                out.extend(self._batch(chunk))
                bar.update(len(chunk))
        return out

    def predict(
        self,
        video: str | Path | None = None,
        audio: str | Path | None = None,
        text: str | None = None,
        start: float | None = None,
        end: float | None = None,
        id: str | None = None,
    ) -> Prediction:
        """The emotion of one clip (or of ``[start, end]`` seconds of it) from whatever is
        given: a video (its soundtrack is the audio when no ``audio`` is given), an audio file,
        a transcript. A modality that cannot be used (no face, silence, no text) is left out;
        when none can, :class:`DataError` says why for each."""
        if video is None and audio is None and not (text or "").strip():
            raise DataError("nothing to predict from: give a video, an audio file or a text")
        item = Utterance(
            id=id or "",
            audio=Path(audio) if audio is not None else None,
            video=Path(video) if video is not None else None,
            text=text or "",
            start=start,
            end=end,
            audio_start=start,
            audio_end=end,
        )
        for path in (item.audio, item.video):
            if path is not None and not path.is_file():
                raise DataError(f"{path}: file missing")
        result = self.predict_items([item])[0]
        if result.error is not None:
            raise DataError(result.error)
        return result

    def __call__(self, source: str | Path, text: str | None = None) -> Prediction:
        """``p("clip.mp4")``, ``p("speech.wav", text=...)``, ``p("What a day")``: a video or
        audio file by its suffix, anything else a sentence (see :meth:`predict`)."""
        from emomatch.corpora.folder import AUDIO_SUFFIXES, VIDEO_SUFFIXES

        suffix = Path(str(source)).suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return self.predict(video=source, text=text)
        if suffix in AUDIO_SUFFIXES:
            return self.predict(audio=source, text=text)
        if isinstance(source, Path) or text is not None:
            known = ", ".join(VIDEO_SUFFIXES + AUDIO_SUFFIXES)
            raise DataError(f"{source}: not a video or audio file name ({known})")
        return self.predict(text=source)

    def predict_manifest(self, path: str | Path, progress: bool = False) -> list[Prediction]:
        """One prediction per row of a manifest (CSV/JSONL: id, audio, video, text, start,
        end, ...; media paths relative to the manifest), extractors loaded once, rows batched."""
        from emomatch.corpora.manifest import read_manifest
        from emomatch.extract.run import utterances_from_manifest

        return self.predict_items(
            utterances_from_manifest(read_manifest(path, complete=False)), progress
        )

    def predict_segments(
        self,
        video: str | Path | None = None,
        audio: str | Path | None = None,
        text: str | TimedText | None = None,
        width: float = 5.0,
        hop: float | None = None,
        progress: bool = False,
    ) -> list[Prediction]:
        """Emotion over time in a long recording: one prediction per window of ``width``
        seconds every ``hop`` (default ``width``: back to back). ``text`` given as timed
        segments [(start, end, text), ...] makes the windows those segments instead; a plain
        text has no times to cut by, so windows get speech-to-text where it is installed."""
        source = audio if audio is not None else video
        if source is None:
            raise DataError("windows need a recording: give a video or an audio file")
        if not width >= MIN_WINDOW_SECONDS or (hop is not None and not hop >= MIN_WINDOW_SECONDS):
            raise DataError(
                f"windows of {width:g} s every {hop if hop is not None else width:g} s: both "
                f"must be at least {MIN_WINDOW_SECONDS:g} s"
            )
        source = Path(source)
        if not source.is_file():
            raise DataError(f"{source}: file missing")
        stem = source.stem
        if text is not None and not isinstance(text, str):
            windows = [(float(s), float(e), str(t)) for s, e, t in text]
            bad = [(s, e) for s, e, _ in windows if not (0 <= s < e and math.isfinite(e))]
            if bad:
                raise DataError(f"transcript segment {bad[0]}: need 0 <= start < end seconds")
        else:
            windows = [(s, e, "") for s, e in self.windows(media_duration(source), width, hop)]
        items = [
            Utterance(
                id=f"{stem}@{s:.2f}",
                audio=Path(audio) if audio is not None else None,
                video=Path(video) if video is not None else None,
                text=t,
                start=s,
                end=e,
                audio_start=s,
                audio_end=e,
            )
            for s, e, t in windows
        ]
        return self.predict_items(items, progress)

    @staticmethod
    def windows(
        duration: float, width: float, hop: float | None = None
    ) -> list[tuple[float, float]]:
        """(start, end) of the windows over ``duration`` seconds: every ``hop`` seconds one of
        ``width`` seconds, the last one cut at the end of the recording, so that every second
        is scored (a last stub under :data:`MIN_WINDOW_SECONDS` joins the window before it)."""
        hop = width if hop is None else hop
        if not (width > 0 and hop > 0 and math.isfinite(width) and math.isfinite(hop)):
            raise DataError(f"window width and hop must be positive seconds, got {width}, {hop}")
        out: list[tuple[float, float]] = []
        start = 0.0
        while start < duration:
            end = min(start + width, duration)
            if out and end - start < MIN_WINDOW_SECONDS:
                out[-1] = (out[-1][0], round(duration, 3))
                break
            out.append((round(start, 3), round(end, 3)))
            start += hop
        return out

    def __repr__(self) -> str:
        members = len(self.ensemble)
        return (
            f"Predictor({self.bundle.source!r}, labels={self.labels}, "
            f"modalities={self.modalities}, members={members}, device={str(self.device)!r})"
        )


def load(
    bundle: str | Path,
    device: str = "cpu",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    transcribe: bool | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> Predictor:
    """A :class:`Predictor` for a bundle folder or archive written by ``emomatch export``.

    ``options``: per modality, extractor options the bundle cannot carry (``{"lexical":
    {"model": "/models/bert"}}`` for a custom text model) or run-time ones (``batch_size``);
    ``transcribe``: speech-to-text for clips without a transcript (None: when faster-whisper is
    installed). The extractors are rebuilt from the bundle's record and checked against it:
    anything that would make features differently is refused here, naming the setting."""
    return Predictor(read_bundle(bundle), device, options, transcribe, batch_size)
