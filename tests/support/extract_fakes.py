"""Small real extractors for testing the extraction run without the heavy models."""

from __future__ import annotations

import os
import wave
import zlib
from collections.abc import Sequence

import numpy as np

from emomatch.extract import Features, ItemError, Result, Utterance, fit_sequence, missing
from emomatch.store import ModalitySpec


class WavStats:
    """acoustic: duration, RMS and peak of a WAV file (stdlib decoding)."""

    modality = "acoustic"

    def __init__(self, crash_on: str | None = None) -> None:
        self.crash_on = crash_on

    def spec(self) -> ModalitySpec:
        return ModalitySpec(kind="vector", dim=3, extractor={"name": "wavstats"})

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        out: list[Result] = []
        for item in items:
            if self.crash_on is not None and item.id == self.crash_on:
                os._exit(3)  # a worker dying mid-chunk, as a crash or kill would
            if item.audio is None or not item.audio.is_file():
                out.append(ItemError(f"audio file missing: {item.audio}"))
                continue
            if item.audio.stat().st_size == 0:
                out.append(ItemError("zero-length audio file"))
                continue
            try:
                with wave.open(str(item.audio)) as fh:
                    rate = fh.getframerate()
                    pcm = np.frombuffer(fh.readframes(fh.getnframes()), "<i2") / 32768.0
            except (wave.Error, EOFError) as exc:
                out.append(ItemError(f"corrupt audio: {exc}"))
                continue
            if len(pcm) == 0:
                out.append(ItemError("zero-length audio"))
                continue
            seconds = len(pcm) / rate
            vec = np.array([seconds, np.sqrt((pcm**2).mean()), np.abs(pcm).max()], np.float32)
            out.append(Features(vec, 1, seconds))
        return out


class HashedWords:
    """lexical: one deterministic pseudo-random vector per word; empty text is an error."""

    modality = "lexical"

    def __init__(self, max_words: int = 6, dim: int = 8) -> None:
        self.max_words, self.dim = max_words, dim

    def spec(self) -> ModalitySpec:
        return ModalitySpec(
            kind="sequence", dim=self.dim, max_len=self.max_words, extractor={"name": "hashed"}
        )

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        out: list[Result] = []
        for item in items:
            words = item.text.split()
            if not words:
                out.append(ItemError("empty transcript"))
                continue
            vecs = np.stack(
                [np.random.default_rng(zlib.crc32(w.encode())).normal(size=self.dim) for w in words]
            )
            arr, n = fit_sequence(vecs, self.max_words)
            out.append(Features(arr, n))
        return out


class NoFace:
    """visual: every clip is faceless, so visual is recorded missing."""

    modality = "visual"

    def spec(self) -> ModalitySpec:
        return ModalitySpec(kind="sequence", dim=4, max_len=3, extractor={"name": "noface"})

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        return [missing(self.spec()) for _ in items]
