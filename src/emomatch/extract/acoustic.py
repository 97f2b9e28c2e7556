"""Acoustic features with openSMILE, in process: one ``Smile`` object per extractor, fed decoded
waveforms.

The paper's acoustic input is the INTERSPEECH 2010 paralinguistic challenge set (1582
functionals per utterance); it ships with the ``opensmile`` package, and so do the other
challenge sets (eGeMAPSv02, ComParE_2016, emobase, ...). A user's own ``.conf`` file works too.
Audio comes from :func:`emomatch.extract.audio.load_audio`, so any container PyAV reads (WAV,
MP4, the soundtrack of an AVI) and any segment of it can be used, always at 16 kHz mono.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emomatch.errors import ConfigError
from emomatch.extract.audio import SAMPLE_RATE, load_clip
from emomatch.extract.base import (
    EXTRACTORS,
    Features,
    ItemError,
    Result,
    Utterance,
    extractor_settings,
    fit_sequence,
)
from emomatch.store import ModalitySpec

#: our level names -> openSMILE's sink level names (a user config may name any other level)
LEVELS = {"functionals": "func", "lld": "lld", "lld_deltas": "lld_de"}

#: seconds of probe signal that a feature set is run on once, to learn its output size and to
#: surface a broken configuration before any item is processed
_PROBE_SECONDS = 1.0


def _feature_sets() -> dict[str, Any]:
    """Shipped feature sets by lower-cased enum name and config name (``is10``,
    ``is10_paraling_compat``, ``egemapsv02``, ...)."""
    import opensmile

    known: dict[str, Any] = {}
    for fs in opensmile.FeatureSet:
        known[fs.name.lower()] = fs
        known.setdefault(Path(fs.value).name.lower(), fs)
    return known


def feature_set_names() -> list[str]:
    """Names of the feature sets that ship with the installed openSMILE."""
    import opensmile

    return [fs.name for fs in opensmile.FeatureSet]


def _probe_signal() -> np.ndarray:
    # A voiced-like harmonic tone with a little noise: pitch, voicing and spectral features all
    # have something to measure, so no functional is undefined.
    t = np.arange(int(_PROBE_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    noise = np.random.default_rng(0).normal(scale=0.02, size=t.size)
    return (0.2 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + noise).astype(np.float32)


def _smile_error(exc: Exception, feature_set: Any, level: str) -> str:
    """openSMILE's exception says only ``Code: 1``; its log says what is wrong."""
    import opensmile

    fd, log = tempfile.mkstemp(suffix=".log")
    os.close(fd)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opensmile.Smile(
                    feature_set=feature_set, feature_level=level, loglevel=2, logfile=log
                )
        except Exception:
            pass
        lines = [
            line.strip()
            for line in Path(log).read_text(errors="replace").splitlines()
            if "(ERR)" in line and "unknown option" not in line
        ]
    finally:
        Path(log).unlink(missing_ok=True)
    return "; ".join(lines[-3:]) or str(exc)


class OpenSmileExtractor:
    """openSMILE features of each utterance's audio (or its video's soundtrack).

    ``feature_set``: a shipped set by name (``IS10``, the paper's 1582 functionals;
    ``eGeMAPSv02``, ``ComParE_2016``, ``emobase``, ...), ignored when ``config`` (a ``.conf``
    file) is given. ``feature_level``: ``functionals`` (one vector per utterance), ``lld`` or
    ``lld_deltas`` (frame sequences of at most ``max_frames``); with a user config, any sink level
    it defines. Items whose peak level is below ``silence_db`` dBFS are errors (None: keep all).
    """

    modality = "acoustic"

    def __init__(
        self,
        feature_set: str = "IS10",
        feature_level: str = "functionals",
        config: str | Path | None = None,
        silence_db: float | None = -60.0,
        max_frames: int = 1000,
    ) -> None:
        import opensmile

        self.config = Path(config).expanduser() if config is not None else None
        self.config_sha256: str | None = None
        if self.config is not None:
            if not self.config.is_file():
                raise ConfigError(f"openSMILE config file {self.config} does not exist")
            # Only the file itself is hashed: files it includes are assumed to travel with it.
            self.config_sha256 = hashlib.sha256(self.config.read_bytes()).hexdigest()
            self.feature_set = self.config.stem
            self._feature_set: Any = str(self.config.resolve())
        else:
            found = _feature_sets().get(str(feature_set).lower())
            if found is None:
                raise ConfigError(
                    f"unknown openSMILE feature set {feature_set!r}; "
                    f"known: {', '.join(feature_set_names())} (or pass config=PATH.conf)"
                )
            self.feature_set = found.name
            self._feature_set = found
        if feature_level in LEVELS:
            self._level = LEVELS[feature_level]
        elif self.config is not None:
            self._level = feature_level
        else:
            raise ConfigError(
                f"unknown openSMILE feature level {feature_level!r}; known: {', '.join(LEVELS)}"
            )
        if self._level == "lld_de" and self.config is None and "gemaps" in self.feature_set.lower():
            raise ConfigError(f"feature set {self.feature_set} has no deltas (lld_deltas)")
        self.feature_level = feature_level
        self.vector = self._level == "func"
        if max_frames < 1:
            raise ConfigError(f"max_frames must be positive, got {max_frames}")
        self.max_frames = max_frames
        if silence_db is not None and not (isinstance(silence_db, int | float) and silence_db < 0):
            raise ConfigError(f"silence_db must be a negative dBFS level or None, got {silence_db}")
        self.silence_db = silence_db
        self.opensmile_version = opensmile.__version__
        self._smile: Any = None
        self._dim: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The Smile object wraps a native library handle: workers build their own.
        state = dict(self.__dict__)
        state["_smile"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _load(self) -> Any:
        if self._smile is None:
            import opensmile

            with warnings.catch_warnings():
                # Deprecation notices for old GeMAPS versions the user chose on purpose.
                warnings.simplefilter("ignore", UserWarning)
                try:
                    self._smile = opensmile.Smile(
                        feature_set=self._feature_set, feature_level=self._level, loglevel=0
                    )
                except Exception as exc:
                    where = self.config if self.config is not None else self.feature_set
                    reason = _smile_error(exc, self._feature_set, self._level)
                    raise ConfigError(
                        f"openSMILE cannot load {where} at level {self._level!r}: {reason}"
                    ) from None
        return self._smile

    def _frames(self, signal: np.ndarray) -> np.ndarray:
        """(frames, features) of one mono 16 kHz signal."""
        smile = self._load()
        # openSMILE reads 16-bit PCM: a full-scale +1.0 would wrap to -32768.
        pcm = np.clip(signal, -1.0, 32767 / 32768).astype(np.float32)
        with warnings.catch_warnings():
            # "Segment too short, filling with NaN": caught below as non-finite output.
            warnings.simplefilter("ignore", UserWarning)
            out = smile(pcm, SAMPLE_RATE)
        return np.asarray(out[0], dtype=np.float32).T

    @property
    def dim(self) -> int:
        if self._dim is None:
            try:
                frames = self._frames(_probe_signal())
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"openSMILE feature set {self.config or self.feature_set} fails on a test "
                    f"signal: {exc}"
                ) from None
            if frames.ndim != 2 or frames.shape[1] < 1:
                raise ConfigError(
                    f"openSMILE feature set {self.config or self.feature_set} at level "
                    f"{self._level!r} gives no features"
                )
            if self.vector and frames.shape[0] != 1:
                raise ConfigError(
                    f"openSMILE feature set {self.config or self.feature_set} at level "
                    f"{self._level!r} gives {frames.shape[0]} frames for {_PROBE_SECONDS} s, not "
                    "one vector per utterance; choose a frame-level feature_level"
                )
            self._dim = int(frames.shape[1])
        return self._dim

    def feature_names(self) -> list[str]:
        """openSMILE's name of each feature dimension, in order (e.g. ``F0final_sma_amean``)."""
        return list(self._load().feature_names)

    def spec(self) -> ModalitySpec:
        settings: dict[str, Any] = {
            "feature_set": self.feature_set,
            "level": self._level,
            "opensmile_version": self.opensmile_version,
            "sample_rate": SAMPLE_RATE,
        }
        if self.config_sha256 is not None:
            settings["config_sha256"] = self.config_sha256
        return ModalitySpec(
            kind="vector" if self.vector else "sequence",
            dim=self.dim,
            max_len=1 if self.vector else self.max_frames,
            extractor=extractor_settings("opensmile", **settings),
        )

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        dim = self.dim
        return [self._one(item, dim) for item in items]

    def _one(self, item: Utterance, dim: int) -> Result:
        clip = load_clip(item, self.silence_db)
        if isinstance(clip, ItemError):
            return clip
        signal, seconds = clip
        source = item.audio if item.audio is not None else item.video
        try:
            frames = self._frames(signal)
        except ConfigError:
            raise
        except Exception as exc:  # openSMILE's own errors carry no type worth telling apart
            return ItemError(f"{source}: openSMILE failed ({exc})")
        if frames.ndim != 2 or frames.shape[1] != dim or len(frames) == 0:
            return ItemError(
                f"{source}: openSMILE gave output of shape {frames.shape}, not (*, {dim})"
            )
        if not np.isfinite(frames).all():
            bad = int((~np.isfinite(frames)).sum())
            return ItemError(
                f"{source}: openSMILE gave {bad} NaN/inf values ({seconds:.3f} s of audio; "
                "too short for this feature set?)"
            )
        if self.vector:
            if len(frames) != 1:
                return ItemError(f"{source}: openSMILE gave {len(frames)} frames, expected one")
            return Features(frames[0], 1, seconds)
        array, length = fit_sequence(frames, self.max_frames)
        return Features(array, length, seconds)


EXTRACTORS.register("opensmile")(OpenSmileExtractor)

#: ``acoustic.encoder`` values -> the registered extractor that implements each
ENCODERS = {"opensmile": "opensmile", "whisper": "whisper", "hf": "hf"}


@EXTRACTORS.register("acoustic")
def acoustic_extractor(encoder: str = "opensmile", **options: Any) -> Any:
    """The acoustic extractor chosen by ``acoustic.encoder``: ``opensmile`` (functionals or
    frames of an openSMILE set), ``whisper`` (Whisper's encoder) or ``hf`` (a local Hugging
    Face audio model); the other options go to it."""
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown acoustic encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if encoder != "opensmile":
        import emomatch.extract.encoders  # noqa: F401  (registers whisper and hf)
    return EXTRACTORS.get(ENCODERS[encoder])(**options)
