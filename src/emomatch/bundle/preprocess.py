"""From clips and features to model inputs: the extractors that made the training features,
rebuilt from the bundle's record; speech-to-text for clips without a transcript; per clip, the
modalities that could not be used and why."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from emomatch.bundle.format import Bundle
from emomatch.errors import DataError
from emomatch.extract.base import Features, ItemError, Utterance

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from emomatch.extract.asr import Transcriber
    from emomatch.extract.base import Extractor


@dataclass
class ModelInputs:
    """A batch ready for the model: the items as read (transcripts filled in), their feature
    arrays and valid lengths per modality (0: missing), and what was missing and why."""

    items: list[Utterance]
    arrays: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    missing: list[dict[str, str]]
    asr: list[bool]

    def usable(self) -> list[int]:
        """Rows with at least one modality to predict from."""
        total = len(self.arrays)
        return [i for i, gone in enumerate(self.missing) if len(gone) < total]


class Preprocessor:
    """Turns clips into :class:`ModelInputs` exactly as the training features were made."""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "cpu",
        options: Mapping[str, Mapping[str, Any]] | None = None,
        transcribe: bool | None = None,
    ) -> None:
        self.bundle = bundle
        self.modalities: list[str] = list(bundle.modalities)
        self.shapes = bundle.shapes
        self.device = device
        self._options = {m: dict(v) for m, v in (options or {}).items()}
        self._extractors: dict[str, Extractor] | None = None
        self._no_media: str | None = None
        self._transcribe = transcribe
        self._transcriber: Transcriber | None = None
        self._build_extractors()

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
            self.bundle.features, self._options, device=self.device
        )

    @property
    def extractors(self) -> dict[str, Extractor]:
        """One extractor per modality, as the training features were made."""
        if self._extractors is None:
            raise DataError(f"this model cannot be applied to media: {self._no_media}")
        return self._extractors

    def _speech_to_text(self) -> Transcriber | None:
        from emomatch.extract.asr import Transcriber, asr_available

        if self._transcriber is None and self._transcribe is not False:
            if self._transcribe or asr_available():
                self._transcriber = Transcriber()
            else:
                self._transcribe = False
        return self._transcriber

    def with_transcripts(
        self, items: list[Utterance], asr: list[bool], notes: list[str] | None = None
    ) -> list[Utterance]:
        """Rows without text, with speech, get a transcript when speech-to-text is at hand;
        ``asr[k]`` says whether row k's text came from it, ``notes[k]`` why it gave none (a
        refused transcript: another language, low confidence)."""
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
            if transcriber.note:
                log.warning("%s: speech-to-text %s", source, transcriber.note)
                if notes is not None:
                    notes[k] = transcriber.note
            asr[k] = bool(text)
            out.append(replace(item, text=text))
        return out

    def _no_text_reason(self) -> str:
        if self._transcribe is False and self._transcriber is None:
            from emomatch.extract.asr import INSTALL_HINT, asr_available

            if not asr_available():
                return f"no transcript (speech-to-text needs faster-whisper: {INSTALL_HINT})"
            return "no transcript (speech-to-text is turned off)"
        return "no transcript, and no speech found"

    def __call__(self, items: list[Utterance]) -> ModelInputs:
        from emomatch.extract.worker import extract_modalities

        asr = [False] * len(items)
        notes = [""] * len(items)
        items = self.with_transcripts(items, asr, notes)
        results = extract_modalities(self.extractors, items)
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
                refused = f"no transcript (speech-to-text {notes[i]})" if notes[i] else ""
                missing[i]["lexical"] = refused or self._no_text_reason()
            if "visual" in missing[i] and item.video is None:
                missing[i]["visual"] = "no video"
        return ModelInputs(items, arrays, lengths, missing, asr)


def feature_inputs(
    features: Mapping[str, np.ndarray],
    lengths: Mapping[str, np.ndarray] | None,
    shapes: Mapping[str, Sequence[int]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features already extracted, checked against the model's shapes: ``features[m]`` is
    (n, *shape of m); ``lengths[m]`` the valid frames/words (default: up to the last non-zero
    frame; 0 marks the modality missing). A modality left out is missing for every row."""
    given = [np.asarray(v) for v in features.values()]
    if not given:
        raise DataError("predict_features needs features of at least one modality")
    n = len(given[0])
    unknown = sorted(set(features) - set(shapes))
    if unknown:
        raise DataError(f"features of {', '.join(unknown)}: the model does not use them")
    arrays, lens = {}, {}
    for m, shape in shapes.items():
        shape = tuple(shape)
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
        arrays[m] = x
        lens[m] = np.asarray(n_m, dtype=np.int64)
    if all(int(v.max()) == 0 for v in lens.values()) and n > 0:
        raise DataError("every modality is missing in every row: nothing to predict from")
    return arrays, lens
