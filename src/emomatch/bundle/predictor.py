"""Applying a bundle to new recordings: extractors rebuilt from the bundle's recorded settings,
then the encoders and the classifier (never the decoders) of each member, probabilities
averaged over the members."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emomatch.bundle.format import Bundle, BundleError, read_bundle
from emomatch.errors import DataError
from emomatch.extract.base import Features, ItemError, Utterance

if TYPE_CHECKING:
    import torch

    from emomatch.extract.base import Extractor
    from emomatch.extract.transcribe import Transcriber

#: utterances extracted and classified together
DEFAULT_BATCH = 16
#: narrowest window of emotion over time, seconds: shorter ones hold no syllable and no facial
#: movement (the service's shortest clip), and an hour cut that fine is millions of windows
MIN_WINDOW_SECONDS = 0.2
#: a window shorter than this share of ``width`` at the end of a recording is left out (too
#: little signal to say anything), unless it is the only one
_LAST_WINDOW_SHARE = 0.5

#: a timed transcript: (start, end, text) per segment, seconds
TimedText = Sequence[tuple[float, float, str]]


@dataclass
class Prediction:
    """The model's answer for one clip (or one window of a recording).

    ``label`` is None only when nothing of the clip could be used (``error`` says why); each
    modality that was not used is in ``missing`` with the reason."""

    label: str | None
    probabilities: dict[str, float]
    #: modalities the prediction is made from
    modalities: list[str]
    id: str | None = None
    start: float | None = None
    end: float | None = None
    #: the transcript the lexical modality read (given, or from speech-to-text)
    text: str | None = None
    #: whether ``text`` came from speech-to-text
    asr: bool = False
    missing: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "id": self.id,
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "modalities": list(self.modalities),
            "missing": dict(self.missing),
            "text": self.text,
            "asr": self.asr,
            "error": self.error,
        }


def _state(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


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


#: values a model may hold beyond its saved weights (non-persistent buffers such as position
#: codes): a config that asks for more is not one a bundle's weights could have come from
_MAX_UNSAVED_VALUES = 1 << 26


def _check_weights_fit(bundle: Bundle, model_cfg: Any) -> None:
    """Every member's tensors have exactly the names and shapes of the model that config.yaml
    and bundle.json describe, checked on a model built on torch's ``meta`` device (no memory):
    a bundle declaring a 5e6-wide input or ``latent_dim: 2000000000`` is refused before the
    real model is allocated."""
    import torch

    from emomatch.model import EmotionModel, Normalizer

    try:
        with torch.device("meta"):
            model = EmotionModel(bundle.shapes, len(bundle.labels), model_cfg)
            normalizer = Normalizer({m: s[-1] for m, s in bundle.shapes.items()})
    except (DataError, ValueError, RuntimeError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(
            f"{bundle.source}: config.yaml and bundle.json describe no model ({detail})"
        ) from None
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    expected.update({f"normalizer.{k}": tuple(v.shape) for k, v in normalizer.state_dict().items()})
    held = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    saved = sum(math.prod(shape) for shape in expected.values())
    if held - saved > _MAX_UNSAVED_VALUES:
        raise BundleError(
            f"{bundle.source}: config.yaml asks for a model of {held:,} values beyond its "
            f"{saved:,} saved weights; not a model a bundle holds"
        )
    for k, tensors in enumerate(bundle.members):
        name = bundle.meta["members"][k].get("weights")
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            which = f"lacks {missing[0]}" if missing else f"holds the unknown {extra[0]}"
            raise BundleError(
                f"{bundle.source}: {name} does not fit the model of config.yaml (it {which}; "
                f"{len(missing)} missing, {len(extra)} unexpected)"
            )
        for key, shape in expected.items():
            if tuple(tensors[key].shape) != shape:
                raise BundleError(
                    f"{bundle.source}: {name} does not fit the model of config.yaml ({key} "
                    f"is {list(tensors[key].shape)}, the model's is {list(shape)})"
                )


class Predictor:
    """A loaded bundle, ready to predict: see :func:`load`."""

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
        from emomatch.model import EmotionModel, Normalizer

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
        _check_weights_fit(bundle, model_cfg)
        self._members: list[tuple[Any, Any]] = []
        for k, tensors in enumerate(bundle.members):
            model = EmotionModel(self.shapes, len(self.labels), model_cfg)
            normalizer = Normalizer({m: s[-1] for m, s in self.shapes.items()})
            try:
                model.load_state_dict(_state(tensors, "model."), strict=True)
                normalizer.load_state_dict(_state(tensors, "normalizer."), strict=True)
            except RuntimeError as exc:
                name = bundle.meta["members"][k].get("weights")
                detail = str(exc).splitlines()[0]
                raise BundleError(
                    f"{bundle.source}: {name} does not fit the model of config.yaml ({detail})"
                ) from None
            self._members.append((model.eval().to(self.device), normalizer.to(self.device)))
        self._options = {m: dict(v) for m, v in (options or {}).items()}
        self._extractors: dict[str, Extractor] | None = None
        self._no_media: str | None = None
        self._transcribe = transcribe
        self._transcriber: Transcriber | None = None
        self._build_extractors()

    # --- extractors -------------------------------------------------------------------------

    def _build_extractors(self) -> None:
        """The extractors that made the training features, rebuilt and checked against the
        bundle's record; a bundle of features no extractor can make (synthetic ones) predicts
        from features only."""
        from emomatch.extract.provenance import extractor_options, rebuild_extractors

        try:
            for m, recorded in self.bundle.features.items():
                extractor_options(m, recorded)
        except DataError as exc:
            self._no_media = str(exc)
            return
        unknown = sorted(set(self._options) - set(self.modalities))
        if unknown:
            raise DataError(f"options for modalities the model does not use: {', '.join(unknown)}")
        self._extractors = rebuild_extractors(
            self.bundle.features, self._options, device=str(self.device)
        )

    @property
    def extractors(self) -> dict[str, Extractor]:
        """One extractor per modality, as the training features were made."""
        if self._extractors is None:
            raise DataError(f"this model cannot be applied to media: {self._no_media}")
        return self._extractors

    def _speech_to_text(self) -> Transcriber | None:
        from emomatch.extract.transcribe import Transcriber, asr_available

        if self._transcriber is None and self._transcribe is not False:
            if self._transcribe or asr_available():
                self._transcriber = Transcriber()
            else:
                self._transcribe = False
        return self._transcriber

    # --- from features ----------------------------------------------------------------------

    def _forward(
        self, arrays: Mapping[str, torch.Tensor], lengths: Mapping[str, torch.Tensor]
    ) -> np.ndarray:
        import torch

        total = None
        with torch.inference_mode():
            for model, normalizer in self._members:
                inputs = {
                    m: (normalizer(m, arrays[m], lengths[m]), lengths[m]) for m in self.modalities
                }
                probs = torch.softmax(model(inputs, reconstruct=False).logits.float(), dim=1)
                total = probs if total is None else total + probs
        assert total is not None
        return (total / len(self._members)).cpu().numpy()

    def predict_features(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Class probabilities (n x labels) of features already extracted with the model's
        settings: ``features[m]`` is (n, *shape of m); ``lengths[m]`` the valid frames/words
        (default: up to the last non-zero frame; 0 marks the modality missing). A modality left
        out of ``features`` is missing for every row."""
        import torch

        given = [np.asarray(v) for v in features.values()]
        if not given:
            raise DataError("predict_features needs features of at least one modality")
        n = len(given[0])
        unknown = sorted(set(features) - set(self.modalities))
        if unknown:
            raise DataError(f"features of {', '.join(unknown)}: the model does not use them")
        arrays, lens = {}, {}
        for m in self.modalities:
            shape = self.shapes[m]
            if m in features:
                x = np.asarray(features[m], dtype=np.float32)
                if x.shape != (n, *shape):
                    raise DataError(
                        f"{m} features have shape {list(x.shape)}, the model takes {[n, *shape]}"
                    )
                if lengths is not None and m in lengths:
                    n_m = np.asarray(lengths[m], dtype=np.int64)
                elif len(shape) == 1:
                    n_m = np.ones(n, dtype=np.int64)
                else:
                    nonzero = np.abs(x).sum(axis=2) > 0
                    n_m = np.where(nonzero.any(1), shape[0] - np.argmax(nonzero[:, ::-1], 1), 0)
            else:
                x = np.zeros((n, *shape), dtype=np.float32)
                n_m = np.zeros(n, dtype=np.int64)
            arrays[m] = torch.from_numpy(x).to(self.device)
            lens[m] = torch.from_numpy(np.asarray(n_m, dtype=np.int64)).to(self.device)
        if all(int(v.max()) == 0 for v in lens.values()) and n > 0:
            raise DataError("every modality is missing in every row: nothing to predict from")
        return self._forward(arrays, lens)

    # --- from media -------------------------------------------------------------------------

    def _with_transcripts(self, items: list[Utterance], asr: list[bool]) -> list[Utterance]:
        """Rows without text, with speech, get a transcript when speech-to-text is at hand."""
        if "lexical" not in self.modalities:
            return items
        out = []
        for k, item in enumerate(items):
            source = item.audio or item.video
            if item.text.strip() or source is None:
                out.append(item)
                continue
            transcriber = self._speech_to_text()
            if transcriber is None:
                out.append(item)
                continue
            start, end = (
                (item.audio_start, item.audio_end) if item.audio else (item.start, item.end)
            )
            try:
                text = transcriber(source, start, end)
            except DataError:
                text = ""  # unreadable audio: the acoustic extractor says why
            asr[k] = bool(text)
            out.append(replace(item, text=text))
        return out

    def _no_text_reason(self) -> str:
        if self._transcribe is False and self._transcriber is None:
            from emomatch.extract.transcribe import INSTALL_HINT, asr_available

            if not asr_available():
                return f"no transcript (speech-to-text needs faster-whisper: {INSTALL_HINT})"
            return "no transcript (speech-to-text is turned off)"
        return "no transcript, and no speech found"

    def _batch(self, items: list[Utterance]) -> list[Prediction]:
        import torch

        asr = [False] * len(items)
        items = self._with_transcripts(items, asr)
        results = self._extract(items)
        n = len(items)
        arrays = {m: np.zeros((n, *self.shapes[m]), np.float32) for m in self.modalities}
        lengths = {m: np.zeros(n, np.int64) for m in self.modalities}
        missing: list[dict[str, str]] = [{} for _ in items]
        for m in self.modalities:
            for i, r in enumerate(results[m]):
                if isinstance(r, Features) and r.length > 0:
                    arrays[m][i], lengths[m][i] = r.array, r.length
                elif isinstance(r, ItemError):
                    missing[i][m] = r.reason
                else:
                    missing[i][m] = "no face found" if m == "visual" else "nothing found"
        for i, item in enumerate(items):
            if "lexical" in missing[i] and not item.text.strip():
                missing[i]["lexical"] = self._no_text_reason()
            if "visual" in missing[i] and item.video is None:
                missing[i]["visual"] = "no video"
        usable = [i for i in range(n) if len(missing[i]) < len(self.modalities)]
        probs = np.zeros((n, len(self.labels)), np.float32)
        if usable:
            sel = torch.as_tensor(usable)
            probs[usable] = self._forward(
                {m: torch.from_numpy(a)[sel].to(self.device) for m, a in arrays.items()},
                {m: torch.from_numpy(v)[sel].to(self.device) for m, v in lengths.items()},
            )
        out = []
        for i, item in enumerate(items):
            used = [m for m in self.modalities if m not in missing[i]]
            common: dict[str, Any] = {
                "id": item.id or None,
                "start": item.start,
                "end": item.end,
                "text": item.text or None,
                "asr": asr[i],
                "missing": missing[i],
                "modalities": used,
            }
            if not used:
                reasons = "; ".join(f"{m}: {r}" for m, r in missing[i].items())
                out.append(Prediction(None, {}, error=f"nothing usable ({reasons})", **common))
                continue
            row = {c: float(p) for c, p in zip(self.labels, probs[i], strict=True)}
            out.append(Prediction(self.labels[int(np.argmax(probs[i]))], row, **common))
        return out

    def _extract(self, items: list[Utterance]) -> dict[str, list[Any]]:
        from emomatch.extract.run import extract_modalities

        return extract_modalities(self.extractors, items)

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

    def predict_manifest(self, path: str | Path, progress: bool = False) -> list[Prediction]:
        """One prediction per row of a manifest (CSV/JSONL: id, audio, video, text, start,
        end, ...; media paths relative to the manifest), extractors loaded once, rows batched."""
        from emomatch.corpora.manifest import read_manifest
        from emomatch.extract.run import utterances_from_manifest

        return self.predict_items(utterances_from_manifest(read_manifest(path)), progress)

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
        """(start, end) of the windows over ``duration`` seconds."""
        hop = width if hop is None else hop
        if not (width > 0 and hop > 0 and math.isfinite(width) and math.isfinite(hop)):
            raise DataError(f"window width and hop must be positive seconds, got {width}, {hop}")
        out: list[tuple[float, float]] = []
        start = 0.0
        while start < duration:
            end = min(start + width, duration)
            if out and end - start < _LAST_WINDOW_SHARE * width:
                break
            out.append((round(start, 3), round(end, 3)))
            start += hop
        return out

    def __repr__(self) -> str:
        members = len(self._members)
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
