"""A synthetic corpus of raw media: speech-like WAV audio, drawn-face MP4 video, transcripts.

It exists so that the whole pipeline (extract -> store -> train) can run end to end without a
licensed corpus. Every utterance has an emotion and an *intensity*; each modality shows the
emotion through the cues people (and the extractors) actually pick up:

* audio: a voiced source (harmonics of a jittered pitch contour) shaped by vowel formants and
  cut into syllables. Anger and happiness raise pitch, pitch range, loudness and speaking rate;
  sadness lowers them and makes the voice breathy; anger makes it harsh (flatter spectrum).
* video: a drawn face whose mouth curvature and opening, brow angle and eye opening follow the
  emotion; the mouth also moves with the syllables of the audio; the head drifts, lighting and
  position vary.
* text: a sentence of neutral filler words mixed with emotion-tinted words.

Speakers differ (voice pitch and timbre, face shape and colours, talking speed) and each
utterance adds its own noise. With some probability a modality is *uninformative* for an
utterance (it shows a neutral face, neutral words or a neutral voice whatever the label), so that
no one modality is enough and fusion matters. The unlabeled pool has a skewed emotion mix, like a
meeting corpus used as unlabeled data. Output is a standard manifest (``manifest.csv``) with
relative media paths, ready for ``emomatch extract``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields, replace
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.corpora.manifest import write_manifest
from emomatch.corpora.record import corpus_record, write_corpus_record
from emomatch.errors import DataError
from emomatch.extract.mediawrite import write_video, write_wav

#: Split names as the training config expects them (``DataConfig``).
SPLITS = ("train", "validation", "test")
UNLABELED_SPLIT = "unlabeled"
DEFAULT_CLASSES = ("angry", "happy", "neutral", "sad")
#: the corpus record's name (``corpus.json``): a model trained on it names it when applied
SYNTHETIC_MEDIA_NAME = "emomatch synthetic clips (generated audio, faces, English transcripts)"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@dataclass(frozen=True)
class EmotionProfile:
    """How one emotion shows at full intensity; an utterance blends it with neutral."""

    #: pitch level as a factor of the speaker's own
    pitch: float
    #: pitch movement across the utterance, semitones
    pitch_range: float
    #: loudness relative to the speaker's neutral voice, dB
    energy_db: float
    #: speaking rate as a factor of the speaker's own
    rate: float
    #: aspiration noise relative to the voiced signal
    breathiness: float
    #: cycle-to-cycle pitch perturbation, fraction of pitch
    jitter: float
    #: source spectral slope: harmonic k has amplitude k**-tilt (small = harsh, pressed voice)
    tilt: float
    #: + corners up (smile), - corners down
    mouth_curve: float
    #: resting mouth opening, fraction of the maximum
    mouth_open: float
    #: + inner brow ends lowered (anger), - raised (sadness)
    brow_angle: float
    #: eye opening, 1 = neutral
    eye_open: float
    words: tuple[str, ...]
    #: sentence-final punctuation marks to draw from
    endings: tuple[str, ...] = (".",)


NEUTRAL = EmotionProfile(
    pitch=1.0,
    pitch_range=3.0,
    energy_db=0.0,
    rate=1.0,
    breathiness=0.06,
    jitter=0.004,
    tilt=1.6,
    mouth_curve=0.0,
    mouth_open=0.08,
    brow_angle=0.0,
    eye_open=1.0,
    words=_words(
        "okay meeting schedule report tuesday table probably usual plan office normal fine "
        "listed moved morning number"
    ),
    endings=(".", "."),
)

PROFILES: dict[str, EmotionProfile] = {
    "neutral": NEUTRAL,
    "angry": EmotionProfile(
        pitch=1.3,
        pitch_range=7.0,
        energy_db=9.0,
        rate=1.25,
        breathiness=0.02,
        jitter=0.02,
        tilt=0.9,
        mouth_curve=-0.35,
        mouth_open=0.45,
        brow_angle=1.0,
        eye_open=0.65,
        words=_words(
            "furious hate unfair ridiculous stop angry damn annoying fault stupid enough "
            "sick liar useless mad outrageous"
        ),
        endings=("!", "!", "."),
    ),
    "happy": EmotionProfile(
        pitch=1.25,
        pitch_range=9.0,
        energy_db=4.0,
        rate=1.15,
        breathiness=0.05,
        jitter=0.006,
        tilt=1.3,
        mouth_curve=0.9,
        mouth_open=0.6,
        brow_angle=-0.2,
        eye_open=0.85,
        words=_words(
            "great love wonderful excited happy amazing fun glad awesome fantastic laugh "
            "beautiful lucky yay perfect thrilled"
        ),
        endings=("!", ".", "!"),
    ),
    "sad": EmotionProfile(
        pitch=0.86,
        pitch_range=1.5,
        energy_db=-7.0,
        rate=0.72,
        breathiness=0.3,
        jitter=0.012,
        tilt=2.4,
        mouth_curve=-0.75,
        mouth_open=0.03,
        brow_angle=-1.0,
        eye_open=0.7,
        words=_words(
            "sorry miss lonely lost cry tired hurts alone sad gone empty never failed grief "
            "funeral hopeless"
        ),
        endings=("...", ".", "..."),
    ),
}

#: Other spellings of the four emotions (corpus label sets differ).
ALIASES = {
    "ang": "angry",
    "anger": "angry",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "exc": "happy",
    "excited": "happy",
    "neu": "neutral",
    "sadness": "sad",
}

FILLER = _words(
    "I you it was just really today about we that know the a so and my this well then they "
    "what is all again there going think yeah with after like oh"
)

#: Vowel formants (F1, F2, F3) in Hz of an adult male voice; speakers scale them.
VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [270, 2290, 3010],  # i
        [300, 870, 2240],  # u
        [530, 1840, 2480],  # e
        [570, 840, 2410],  # o
        [660, 1720, 2410],  # ae
        [490, 1350, 1690],  # er
    ],
    dtype=np.float64,
)

SAMPLE_RATE = 16000
# Pitch, formants and loudness change slowly: they are computed at this rate and interpolated.
CONTROL_HOP = 32


def profile_for(label: str) -> EmotionProfile:
    """The profile of a class name; an unknown emotion gets a reproducible made-up one."""
    name = ALIASES.get(label.lower(), label.lower())
    if name in PROFILES:
        return PROFILES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    lo, hi = PROFILES["sad"], PROFILES["angry"]
    mix = {f.name: float(rng.uniform()) for f in fields(EmotionProfile) if f.type == "float"}
    made = {k: getattr(lo, k) + w * (getattr(hi, k) - getattr(lo, k)) for k, w in mix.items()}
    made["mouth_curve"] = float(rng.uniform(-0.8, 0.8))
    pool = sorted({w for p in PROFILES.values() for w in p.words} - set(NEUTRAL.words))
    words = (name, *rng.choice(pool, size=7, replace=False).tolist())
    return EmotionProfile(**made, words=words, endings=(".", "!"))


def blend(profile: EmotionProfile, intensity: float) -> EmotionProfile:
    """Neutral moved ``intensity`` of the way towards ``profile`` (words and endings kept)."""
    changes: dict[str, Any] = {}
    for f in fields(EmotionProfile):
        if f.type != "float":
            continue
        a, b = getattr(NEUTRAL, f.name), getattr(profile, f.name)
        if f.name in ("pitch", "rate"):
            changes[f.name] = float(a * (b / a) ** intensity)  # factors blend on a log scale
        else:
            changes[f.name] = float(a + intensity * (b - a))
    return replace(profile, **changes)


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str
    f0: float
    formant_scale: float
    rate: float
    loudness_db: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    head_width: float
    head_height: float
    eye_gap: float
    mouth_width: float


def _shade(
    rng: np.random.Generator, dark: tuple[int, int, int], light: tuple[int, int, int], jitter: int
) -> tuple[int, int, int]:
    """A colour between two anchors (one tone for all channels, so skin stays skin-coloured)
    with a little per-channel variation."""
    tone = rng.uniform()
    r, g, b = (
        int(np.clip(d + tone * (li - d) + rng.integers(-jitter, jitter + 1), 0, 255))
        for d, li in zip(dark, light, strict=True)
    )
    return r, g, b


HAIR = ((25, 20, 18), (70, 45, 30), (120, 75, 40), (200, 160, 90), (140, 140, 135))


def make_speaker(rng: np.random.Generator, speaker_id: str, split: str) -> Speaker:
    """A voice and a face: pitch and timbre from a low or high voice group, own colours."""
    high_voice = bool(rng.integers(0, 2))
    return Speaker(
        id=speaker_id,
        split=split,
        f0=float(rng.normal(205, 18) if high_voice else rng.normal(115, 10)),
        formant_scale=float(rng.normal(1.15, 0.03) if high_voice else rng.normal(1.0, 0.03)),
        rate=float(np.exp(rng.normal(0, 0.08))),
        loudness_db=float(rng.normal(0, 1.5)),
        skin=_shade(rng, (120, 80, 60), (240, 205, 180), 8),
        hair=_shade(rng, HAIR[int(rng.integers(0, len(HAIR)))], (0, 0, 0), 10),
        background=_shade(rng, (50, 55, 60), (150, 150, 145), 25),
        head_width=float(rng.uniform(0.29, 0.35)),
        head_height=float(rng.uniform(0.40, 0.45)),
        eye_gap=float(rng.uniform(0.33, 0.42)),
        mouth_width=float(rng.uniform(0.26, 0.36)),
    )


# ---------------------------------------------------------------------------------- audio


@dataclass
class Syllables:
    """Timing of the spoken syllables, at the control rate."""

    #: loudness envelope 0..1 of the voiced nuclei
    envelope: np.ndarray
    #: onset noise (consonant) envelope 0..1
    onsets: np.ndarray
    #: index of the syllable each control step belongs to (-1: pause)
    index: np.ndarray
    count: int


def _syllables(rng: np.random.Generator, n_ctrl: int, ctrl_rate: float, rate: float) -> Syllables:
    envelope = np.zeros(n_ctrl)
    onsets = np.zeros(n_ctrl)
    index = np.full(n_ctrl, -1)
    # About 4.5 syllables a second at a normal rate, in words of 1-3 syllables with short pauses.
    t = rng.uniform(0.05, 0.2)
    end = n_ctrl / ctrl_rate - 0.08
    count = 0
    while True:
        for _ in range(int(rng.integers(1, 4))):
            dur = float(rng.gamma(8.0, 1.0 / (8.0 * 4.5 * rate)))
            if t + dur > end:
                return Syllables(envelope, onsets, index, count)
            a, b = int(t * ctrl_rate), int((t + dur) * ctrl_rate)
            n = b - a
            if n > 2:
                # A fast rise and slower decay, louder on stressed syllables.
                x = np.linspace(0, 1, n)
                shape = np.sin(np.pi * x**0.7) ** 0.8
                envelope[a:b] = np.maximum(envelope[a:b], shape * rng.uniform(0.55, 1.0))
                k = max(1, int(n * rng.uniform(0.1, 0.3)))
                if rng.uniform() < 0.6:
                    onsets[a : a + k] = np.hanning(k + 2)[1:-1]
                index[a:b] = count
                count += 1
            t += dur
        t += float(rng.uniform(0.04, 0.22)) / rate


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width < 2:
        return x
    kernel = np.hanning(width + 2)[1:-1]
    kernel /= kernel.sum()
    padded = np.pad(x, (width, width), mode="edge")
    return np.convolve(padded, kernel, mode="same")[width:-width]


def _colored_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """White noise band-passed to [low, high] Hz via the FFT, unit RMS."""
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def synthesize_speech(
    rng: np.random.Generator, profile: EmotionProfile, speaker: Speaker, seconds: float
) -> tuple[np.ndarray, np.ndarray]:
    """A speech-like signal and its syllable loudness envelope (at the control rate, for
    moving the mouth in step)."""
    n = int(round(seconds * SAMPLE_RATE))
    n_ctrl = n // CONTROL_HOP + 2
    ctrl_rate = SAMPLE_RATE / CONTROL_HOP
    syl = _syllables(rng, n_ctrl, ctrl_rate, speaker.rate * profile.rate)

    # Pitch: the speaker's level, an accent target per syllable within the emotion's range,
    # a falling declination, and fast cycle-to-cycle jitter.
    targets = rng.uniform(-0.5, 0.5, size=max(syl.count, 1)) * profile.pitch_range
    semitones = np.where(syl.index >= 0, targets[np.maximum(syl.index, 0)], 0.0)
    semitones = _smooth(semitones, int(0.08 * ctrl_rate))
    semitones += np.linspace(1.0, -1.5, n_ctrl) * (0.3 + profile.pitch_range / 8)
    f0_level = speaker.f0 * profile.pitch * np.exp(rng.normal(0, 0.05))
    f0_ctrl = f0_level * 2.0 ** (semitones / 12)
    f0_ctrl *= 1 + profile.jitter * rng.normal(size=n_ctrl)
    f0_ctrl = np.clip(f0_ctrl, 60, 500)

    # Formants move from one syllable's vowel to the next.
    vowel_of = rng.integers(0, len(VOWELS), size=max(syl.count, 1))
    formants = VOWELS[vowel_of[np.maximum(syl.index, 0)]] * speaker.formant_scale
    formants = np.stack([_smooth(formants[:, i], int(0.03 * ctrl_rate)) for i in range(3)], 1)
    bandwidths = np.array([80.0, 100.0, 140.0]) * (1 + 2 * profile.breathiness)

    # Harmonic amplitudes through the formant resonances, at the control rate.
    n_harm = int(4000 / f0_ctrl.min())
    k = np.arange(1, n_harm + 1)
    freq = f0_ctrl[:, None] * k[None, :]
    gain = k[None, :] ** (1.0 - profile.tilt)  # source slope plus lip radiation (+1)
    for i in range(3):
        f_res, bw = formants[:, i : i + 1], bandwidths[i]
        gain = gain * f_res**2 / np.sqrt((f_res**2 - freq**2) ** 2 + (bw * freq) ** 2)
    gain[freq > 7000] = 0.0
    shimmer = 1 + 3 * profile.jitter * rng.normal(size=(n_ctrl, 1))
    gain *= shimmer

    # Synthesis at the sample rate: phase from the integrated pitch.
    t_ctrl = np.arange(n_ctrl) * CONTROL_HOP
    t = np.arange(n)
    f0 = np.interp(t, t_ctrl, f0_ctrl)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    voiced = np.zeros(n)
    for h in range(n_harm):
        amp = np.interp(t, t_ctrl, gain[:, h])
        voiced += amp * np.sin((h + 1) * phase)
    voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12

    envelope = np.interp(t, t_ctrl, syl.envelope)
    onsets = np.interp(t, t_ctrl, syl.onsets)
    aspiration = _colored_noise(rng, n, 400, 5000)
    fricative = _colored_noise(rng, n, 2500, 7500)
    speech = envelope * (voiced + profile.breathiness * 2.0 * aspiration) + 0.35 * onsets * (
        fricative
    )

    loudness = 10 ** ((profile.energy_db + speaker.loudness_db + rng.normal(0, 1.5) - 22) / 20)
    room = 10 ** (rng.uniform(-52, -38) / 20) * _colored_noise(rng, n, 50, 7000)
    signal = loudness * speech / (np.sqrt(np.mean(envelope**2)) + 1e-6) + room
    # Loud shouts saturate softly rather than wrapping around.
    signal = 0.98 * np.tanh(signal / 0.98)
    return signal.astype(np.float32), syl.envelope


# ---------------------------------------------------------------------------------- video


def draw_face(
    size: int,
    speaker: Speaker,
    profile: EmotionProfile,
    mouth_open: float,
    blink: float,
    offset: tuple[float, float],
    tilt_deg: float,
    light: float,
    light_side: float,
) -> np.ndarray:
    """One RGB frame (float, 0..255) of the speaker's face showing ``profile``; drawn at twice
    the size and shrunk so that edges are soft like a camera image."""
    import cv2

    scale = 2
    w = size * scale
    img = np.empty((w, w, 3), np.uint8)
    img[:] = speaker.background
    cx, cy = w / 2 + offset[0] * w, w / 2 + offset[1] * w
    hw, hh = speaker.head_width * w, speaker.head_height * w
    rot = np.deg2rad(tilt_deg)
    cos, sin = np.cos(rot), np.sin(rot)

    def at(x: float, y: float) -> tuple[int, int]:
        # Face coordinates: x, y in head half-widths/half-heights from the centre, y down.
        px, py = x * hw, y * hh
        return int(round(cx + cos * px - sin * py)), int(round(cy + sin * px + cos * py))

    def length(v: float) -> int:
        return max(1, int(round(v)))

    cv2.ellipse(img, at(0, 0), (int(hw), int(hh)), tilt_deg, 0, 360, speaker.skin, -1, cv2.LINE_AA)
    hair_axes = (int(hw * 1.02), int(hh * 0.5))
    cv2.ellipse(img, at(0, -0.55), hair_axes, tilt_deg, 180, 360, speaker.hair, -1, cv2.LINE_AA)
    dark = (30, 25, 25)
    # Brows and eye sockets are darker than the skin whatever the hair and skin colours, as in
    # a lit face; that contrast is also what face detectors look for.
    pairs = zip(speaker.hair, speaker.skin, strict=True)
    brow_color = tuple(int(min(h, 0.45 * k)) for h, k in pairs)
    socket = tuple(int(0.7 * k) for k in speaker.skin)
    white = tuple(int(0.55 * 235 + 0.45 * k) for k in speaker.skin)
    eye_open = max(0.05, profile.eye_open * (1 - blink))
    for side in (-1, 1):
        ex, ey = side * speaker.eye_gap, -0.12
        hollow = (length(0.26 * hw), length(0.14 * hh))
        cv2.ellipse(img, at(ex, ey - 0.02), hollow, tilt_deg, 0, 360, socket, -1, cv2.LINE_AA)
        opening = (length(0.2 * hw), length(0.09 * hh * eye_open))
        cv2.ellipse(img, at(ex, ey), opening, tilt_deg, 0, 360, white, -1, cv2.LINE_AA)
        if eye_open > 0.2:
            radius = length(0.085 * hw * min(1.0, eye_open + 0.3))
            cv2.circle(img, at(ex, ey), radius, dark, -1, cv2.LINE_AA)
        lid = (length(0.2 * hw), length(0.09 * hh * eye_open))
        cv2.ellipse(img, at(ex, ey), lid, tilt_deg, 180, 360, dark, length(0.02 * hh), cv2.LINE_AA)
        # Brows: the inner end goes down for anger, up for sadness; the outer end the other way.
        inner = at(side * 0.14, ey - 0.18 + 0.08 * profile.brow_angle)
        outer = at(side * (speaker.eye_gap + 0.24), ey - 0.21 - 0.04 * profile.brow_angle)
        cv2.line(img, inner, outer, brow_color, length(0.06 * hh), cv2.LINE_AA)
    nose = np.array([at(0, -0.05), at(-0.1, 0.2), at(0.08, 0.22)], np.int32)
    nose_color = tuple(int(c * 0.72) for c in speaker.skin)
    cv2.polylines(img, [nose], False, nose_color, length(0.02 * hh), cv2.LINE_AA)

    # Mouth: a curved band between two lips; corners up for a smile, down for a frown.
    xs = np.linspace(-1, 1, 21)
    bend = 1 - xs**2
    middle = 0.45 + 0.16 * profile.mouth_curve * bend
    upper = middle - 0.04 * mouth_open * bend
    lower = middle + 0.02 + 0.18 * mouth_open * bend
    mw = speaker.mouth_width * (1 + 0.25 * max(profile.mouth_curve, 0))
    outline = [at(x * mw, y) for x, y in zip(xs, upper, strict=True)]
    outline += [at(x * mw, y) for x, y in zip(xs[::-1], lower[::-1], strict=True)]
    poly = np.array(outline, np.int32)
    # Lips darker than any skin, so that the mouth's shape survives conversion to gray.
    r, g, b = speaker.skin
    lips = (int(0.7 * r), int(0.35 * g), int(0.4 * b))
    cv2.fillPoly(img, [poly], (50, 15, 20), cv2.LINE_AA)
    cv2.polylines(img, [poly], True, lips, length(0.035 * hh), cv2.LINE_AA)

    small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    # Light from one side: a horizontal gain ramp, and an overall level.
    ramp = 1 + light_side * np.linspace(-1, 1, size)[None, :, None]
    return small * light * ramp


def render_face_clip(
    rng: np.random.Generator,
    profile: EmotionProfile,
    speaker: Speaker,
    talking: np.ndarray,
    seconds: float,
    fps: int,
    size: int,
) -> np.ndarray:
    """(T, size, size, 3) uint8 frames: the face talks along ``talking`` (syllable envelope at
    the control rate), drifts, blinks, and is seen under this utterance's lighting."""
    n_frames = max(1, int(round(seconds * fps)))
    times = np.arange(n_frames) / fps
    ctrl_rate = SAMPLE_RATE / CONTROL_HOP
    talk = np.interp(times * ctrl_rate, np.arange(len(talking)), talking)
    start = rng.normal(0, 0.03, size=2)
    drift = np.cumsum(rng.normal(0, 0.006, size=(n_frames, 2)), axis=0)
    tilt = rng.normal(0, 4) + np.cumsum(rng.normal(0, 0.5, size=n_frames))
    light = float(np.exp(rng.normal(0, 0.15)))
    light_side = float(rng.normal(0, 0.12))
    blink_at = rng.uniform(0, seconds, size=int(rng.poisson(0.4 * seconds)))
    frames = np.empty((n_frames, size, size, 3), np.float32)
    for f, t in enumerate(times):
        blink = float(np.any(np.abs(blink_at - t) < 0.07))
        # Expressions are not frozen: they breathe a little around the utterance's value.
        wobble = 1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 0.3))
        shown = replace(
            profile,
            mouth_curve=profile.mouth_curve * wobble,
            brow_angle=profile.brow_angle * wobble,
        )
        mouth = min(1.0, profile.mouth_open + 0.5 * talk[f])
        frames[f] = draw_face(
            size,
            speaker,
            shown,
            mouth,
            blink,
            (float(start[0] + drift[f, 0]), float(start[1] + drift[f, 1])),
            float(tilt[f]),
            light,
            light_side,
        )
    frames += rng.standard_normal(size=frames.shape, dtype=np.float32) * 4.0
    return np.clip(frames, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- text


def make_sentence(rng: np.random.Generator, profile: EmotionProfile, intensity: float) -> str:
    """4-11 words: filler mixed with the emotion's words, more of them when it is intense."""
    n = int(rng.integers(4, 12))
    share = 0.1 + 0.35 * intensity
    words = []
    for _ in range(n):
        u = rng.uniform()
        if u < share:
            words.append(str(rng.choice(profile.words)))
        elif u < share + 0.08:
            words.append(str(rng.choice(NEUTRAL.words)))
        else:
            words.append(str(rng.choice(FILLER)))
    if not any(w in profile.words for w in words) and profile.words != NEUTRAL.words:
        words[int(rng.integers(0, n))] = str(rng.choice(profile.words))
    text = " ".join(words)
    return text[0].upper() + text[1:] + str(rng.choice(profile.endings))


# ---------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class _Item:
    id: str
    split: str
    speaker: Speaker
    emotion: str
    labeled: bool
    seed: tuple[int, int]


def _apportion(weights: Sequence[float], total: int) -> np.ndarray:
    """Whole counts in proportion to ``weights`` that add up to ``total`` exactly (largest
    remainders get the leftovers)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = w / w.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(counts - exact, kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts


def _plan(
    per_class_labeled: int,
    unlabeled: int,
    classes: Sequence[str],
    unlabeled_mix: Sequence[float],
    split_fractions: Sequence[float],
    speakers: Mapping[str, int],
    seed: int,
) -> list[_Item]:
    rng = np.random.default_rng([seed, 0])
    roster = {
        split: [make_speaker(rng, f"{split[:2]}{i + 1:02d}", split) for i in range(speakers[split])]
        for split in (*SPLITS, UNLABELED_SPLIT)
    }
    counts = _apportion(split_fractions, per_class_labeled)
    # Every split needs every class; the biggest split gives up the items.
    while counts.min() < 1:
        counts[np.argmin(counts)] += 1
        counts[np.argmax(counts)] -= 1
    items: list[_Item] = []

    def add(split: str, labels: list[str], labeled: bool) -> None:
        # Labels come grouped by class: dealing them round-robin gives every speaker every
        # emotion, as evenly as the counts allow; the shuffle keeps ids from following classes.
        cast = roster[split]
        dealt = [(label, cast[j % len(cast)]) for j, label in enumerate(labels)]
        for pos in rng.permutation(len(dealt)):
            label, who = dealt[pos]
            uid = f"{split}_{len(items):05d}"
            items.append(_Item(uid, split, who, label, labeled, (seed, len(items) + 1)))

    for split, count in zip(SPLITS, counts, strict=True):
        add(split, [c for c in classes for _ in range(int(count))], True)
    pool = _apportion(unlabeled_mix, unlabeled)
    add(UNLABELED_SPLIT, [c for c, m in zip(classes, pool, strict=True) for _ in range(m)], False)
    return items


@dataclass(frozen=True)
class _Settings:
    out: Path
    seconds: float
    fps: int
    size: int
    uninformative: Mapping[str, float]
    neutral: str | None
    classes: tuple[str, ...]


def _shown(rng: np.random.Generator, settings: _Settings, emotion: str, modality: str) -> str:
    """The emotion a modality shows: usually the true one, sometimes neutral (or, in a label
    set without neutral, a random class) whatever the label."""
    if rng.uniform() >= settings.uninformative.get(modality, 0.0):
        return emotion
    if settings.neutral is not None:
        return settings.neutral
    return str(rng.choice(settings.classes))


def _make_item(item: _Item, settings: _Settings) -> dict[str, object]:
    rng = np.random.default_rng(item.seed)
    intensity = float(rng.uniform(0.35, 1.0))
    shown = {m: _shown(rng, settings, item.emotion, m) for m in ("audio", "video", "text")}

    def profile(modality: str) -> EmotionProfile:
        own = float(np.clip(intensity + rng.normal(0, 0.12), 0.2, 1.0))
        return blend(profile_for(shown[modality]), own)

    audio, talking = synthesize_speech(rng, profile("audio"), item.speaker, settings.seconds)
    frames = render_face_clip(
        rng, profile("video"), item.speaker, talking, settings.seconds, settings.fps, settings.size
    )
    text_profile = profile("text")
    text = make_sentence(rng, text_profile, intensity if shown["text"] == item.emotion else 0.0)
    audio_rel, video_rel = f"audio/{item.id}.wav", f"video/{item.id}.mp4"
    write_wav(settings.out / audio_rel, audio, SAMPLE_RATE)
    write_video(settings.out / video_rel, frames, fps=settings.fps)
    return {
        "id": item.id,
        "audio": audio_rel,
        "video": video_rel,
        "text": text,
        "start": None,
        "end": None,
        "speaker": item.speaker.id,
        "label": item.emotion if item.labeled else "",
        "split": item.split,
        # The hidden emotion of every row (also unlabeled ones), for checking pseudo-labels.
        "true_emotion": item.emotion,
        "intensity": round(intensity, 3),
    }


def _make_chunk(items: list[_Item], settings: _Settings) -> list[dict[str, object]]:
    return [_make_item(item, settings) for item in items]


def _chunks(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def default_unlabeled_mix(classes: Sequence[str]) -> tuple[float, ...]:
    """Skewed towards neutral like meeting speech: neutral 50 %, then 25/15/10 % for the others
    in class order (the four default classes: angry 10, happy 25, neutral 50, sad 15)."""
    if tuple(classes) == DEFAULT_CLASSES:
        return (0.10, 0.25, 0.50, 0.15)
    weights = 0.5 ** np.arange(len(classes))
    names = [ALIASES.get(c.lower(), c.lower()) for c in classes]
    if "neutral" in names:
        i = names.index("neutral")
        weights = np.concatenate([weights[1 : i + 1], weights[:1], weights[i + 1 :]])
    return tuple(float(w) for w in weights / weights.sum())


def write_media_corpus(
    out: str | Path,
    per_class_labeled: int = 30,
    unlabeled: int = 120,
    seed: int = 0,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seconds: float = 2.0,
    fps: int = 12,
    size: int = 96,
    unlabeled_mix: Sequence[float] | None = None,
    split_fractions: Sequence[float] = (0.5, 0.2, 0.3),
    speakers: Mapping[str, int] | None = None,
    uninformative: Mapping[str, float] | None = None,
    workers: int = 1,
) -> Path:
    """Write a raw-media emotion corpus under ``out`` and return its ``manifest.csv``.

    ``per_class_labeled`` utterances per class are split train/validation/test by
    ``split_fractions``; ``unlabeled`` more (split ``unlabeled``, empty label) follow
    ``unlabeled_mix`` (default: skewed towards neutral). Speakers never cross splits
    (``speakers``: count per split, default train 4, validation 2, test 2, unlabeled 4).
    ``uninformative``: per modality ("audio", "video", "text") the chance that it shows neutral
    whatever the label. The same arguments always give the same corpus, whatever ``workers``.
    """
    out = Path(out)
    classes = tuple(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(classes):
        raise DataError(f"classes must be at least two distinct names, got {list(classes)}")
    if per_class_labeled < len(SPLITS):
        raise DataError(
            f"per_class_labeled must be at least {len(SPLITS)} (one per split), "
            f"got {per_class_labeled}"
        )
    if unlabeled < 0:
        raise DataError(f"unlabeled must be 0 or more, got {unlabeled}")
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != len(SPLITS) or min(fractions) <= 0:
        raise DataError(f"split_fractions must be 3 positive numbers, got {list(fractions)}")
    mix = tuple(unlabeled_mix) if unlabeled_mix is not None else default_unlabeled_mix(classes)
    if len(mix) != len(classes) or min(mix) < 0 or sum(mix) <= 0:
        raise DataError(
            f"unlabeled_mix needs one non-negative weight per class ({len(classes)}), got "
            f"{list(mix)}"
        )
    layout = {"train": 4, "validation": 2, "test": 2, UNLABELED_SPLIT: 4, **(speakers or {})}
    bad = {k: v for k, v in layout.items() if k not in (*SPLITS, UNLABELED_SPLIT) or v < 1}
    if bad:
        raise DataError(f"speakers: unknown split or count below 1 in {bad}")
    chance = {"audio": 0.2, "video": 0.25, "text": 0.25, **(uninformative or {})}
    if any(m not in ("audio", "video", "text") or not 0 <= p <= 1 for m, p in chance.items()):
        raise DataError(f"uninformative: modalities audio/video/text, chances 0..1; got {chance}")
    if seconds < 0.5 or fps < 1 or size < 32:
        raise DataError(f"need seconds >= 0.5, fps >= 1, size >= 32; got {seconds}, {fps}, {size}")

    names = [ALIASES.get(c.lower(), c.lower()) for c in classes]
    settings = _Settings(
        out=out,
        seconds=float(seconds),
        fps=int(fps),
        size=int(size),
        uninformative=chance,
        neutral=classes[names.index("neutral")] if "neutral" in names else None,
        classes=classes,
    )
    items = _plan(per_class_labeled, unlabeled, classes, mix, fractions, layout, seed)
    rows: list[dict[str, object]] = []
    if workers <= 1:
        rows = _make_chunk(items, settings)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk_rows in pool.map(_make_chunk, _chunks(items, 16), repeat(settings)):
                rows.extend(chunk_rows)
    # the clips are generated: a model trained on them says so wherever it is applied
    write_corpus_record(out, corpus_record(SYNTHETIC_MEDIA_NAME, True, "en"))
    return write_manifest(pd.DataFrame(rows), out / "manifest.csv")
