"""Audio decoding and the openSMILE extractor on synthetic speech-like fixtures."""

from __future__ import annotations

import pickle
import wave
from pathlib import Path

import numpy as np
import pytest

from emomatch.errors import ConfigError
from emomatch.extract import Features, ItemError, Utterance
from emomatch.extract.acoustic import OpenSmileExtractor
from emomatch.extract.audio import AudioError, load_audio, media_seconds
from emomatch.extract.mediawrite import write_video, write_wav

SR = 16000


def voiced(seconds: float, f0: float = 150.0, rate: int = SR, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic signal with slow pitch and loudness movement."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2 * t))
    noise = np.random.default_rng(seed).normal(scale=0.01, size=t.size)
    return 0.25 * tone * envelope + noise


def write_stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> Path:
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def is10() -> OpenSmileExtractor:
    return OpenSmileExtractor()


def one(extractor: OpenSmileExtractor, item: Utterance) -> np.ndarray:
    (result,) = extractor.extract([item])
    assert isinstance(result, Features), result
    return result.array


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Median per-feature relative difference: robust to the sets' very different scales."""
    return float(np.median(np.abs(a - b) / (np.abs(a) + np.abs(b) + 1e-6)))


# --- decoding ---------------------------------------------------------------------------------


def test_load_audio_resamples_and_mixes_down_any_rate(tmp_path) -> None:
    x = voiced(2.0, rate=44100)
    path = write_stereo_wav(tmp_path / "s.wav", x, 0.5 * x, 44100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(2.0 * SR, abs=2)
    reference = load_audio(write_wav(tmp_path / "m.wav", voiced(2.0), SR))
    # The stereo mix is 0.75 x the mono signal; resampling keeps the waveform.
    assert np.corrcoef(audio[100:-100], reference[100:-100])[0, 1] > 0.99
    assert np.abs(audio).max() == pytest.approx(0.75 * np.abs(reference).max(), rel=0.05)
    assert media_seconds(path) == pytest.approx(2.0, abs=1e-3)


def test_segment_is_cut_at_the_requested_times(tmp_path) -> None:
    x = voiced(6.0, f0=130)
    path = write_wav(tmp_path / "long.wav", x)
    cut = load_audio(path, 2.5, 4.25)
    alone = load_audio(write_wav(tmp_path / "seg.wav", x[int(2.5 * SR) : int(4.25 * SR)]))
    assert len(cut) == len(alone) == int(1.75 * SR)
    np.testing.assert_allclose(cut, alone, atol=1e-4)
    assert len(load_audio(path, start=5.0)) == SR
    assert len(load_audio(path, end=0.5)) == SR // 2


def test_load_audio_reads_a_video_soundtrack(tmp_path) -> None:
    x = voiced(2.0)
    frames = np.zeros((20, 32, 32), np.uint8)
    for suffix in (".mp4", ".avi"):
        path = write_video(tmp_path / f"clip{suffix}", frames, fps=10, audio=x, sample_rate=SR)
        audio = load_audio(path, 0.5, 1.5)
        assert len(audio) == SR
        aligned = x[int(0.5 * SR) : int(1.5 * SR)]
        assert np.corrcoef(audio, aligned)[0, 1] > 0.95, suffix


@pytest.mark.parametrize(
    "make, start, end, message",
    [
        (lambda d: d / "nowhere.wav", None, None, "missing"),
        (lambda d: _write(d / "zero.wav", b""), None, None, "zero-length"),
        (lambda d: _write(d / "junk.wav", b"not media at all" * 40), None, None, "corrupt"),
        (lambda d: write_wav(d / "empty.wav", np.zeros(0)), None, None, "no audio samples"),
        (
            lambda d: write_video(d / "mute.mp4", np.zeros((5, 16, 16), np.uint8), fps=5),
            None,
            None,
            "no audio stream",
        ),
        (lambda d: write_wav(d / "a.wav", voiced(1.0)), 3.0, 4.0, "starts after the audio ends"),
        (lambda d: write_wav(d / "b.wav", voiced(1.0)), 0.2, 3.0, "past the end"),
        (lambda d: write_wav(d / "c.wav", voiced(1.0)), 0.6, 0.4, "not after its start"),
        (lambda d: write_wav(d / "e.wav", voiced(1.0)), -1.0, 0.4, "negative"),
    ],
)
def test_load_audio_errors_name_the_file_and_problem(tmp_path, make, start, end, message) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path, start, end)
    assert str(path) in str(info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the extractor ----------------------------------------------------------------------------


def test_is10_and_egemaps_shapes_and_settings(tmp_path, is10) -> None:
    spec = is10.spec()
    assert (spec.kind, spec.dim, spec.shape) == ("vector", 1582, (1582,))
    assert spec.extractor["name"] == "opensmile" and spec.extractor["feature_set"] == "IS10"
    assert spec.extractor["level"] == "func" and spec.extractor["opensmile_version"]
    egemaps = OpenSmileExtractor(feature_set="egemapsv02")
    assert egemaps.spec().dim == 88
    assert egemaps.spec().extractor != spec.extractor
    item = Utterance("u", audio=write_wav(tmp_path / "u.wav", voiced(1.5)))
    for extractor, dim in ((is10, 1582), (egemaps, 88)):
        (result,) = extractor.extract([item])
        assert isinstance(result, Features)
        assert result.array.shape == (dim,) and result.array.dtype == np.float32
        assert result.length == 1 and result.seconds == pytest.approx(1.5)
        assert np.isfinite(result.array).all()


def test_segment_of_a_long_file_gives_the_features_of_that_segment(tmp_path, is10) -> None:
    x = np.concatenate([voiced(3.0, f0=110, seed=1), voiced(2.0, f0=210), voiced(3, seed=2)])
    long = write_wav(tmp_path / "meeting.wav", x)
    alone = write_wav(tmp_path / "turn.wav", x[3 * SR : 5 * SR])
    segment = one(is10, Utterance("seg", audio=long, start=3.0, end=5.0))
    whole = one(is10, Utterance("alone", audio=alone))
    np.testing.assert_allclose(segment, whole, rtol=1e-3, atol=1e-3)
    assert relative_distance(segment, one(is10, Utterance("all", audio=long))) > 0.05


def test_resampled_stereo_and_video_soundtracks_match_the_plain_wav(tmp_path, is10) -> None:
    x44 = voiced(2.0, f0=160, rate=44100)
    stereo = write_stereo_wav(tmp_path / "s44.wav", x44, x44, 44100)
    mono = write_wav(tmp_path / "m16.wav", voiced(2.0, f0=160), SR)
    other = write_wav(tmp_path / "other.wav", voiced(2.0, f0=260, seed=3), SR)
    clip = write_video(
        tmp_path / "clip.mp4",
        np.zeros((20, 32, 32), np.uint8),
        fps=10,
        audio=voiced(2.0, f0=160),
        sample_rate=SR,
    )
    reference = one(is10, Utterance("m", audio=mono))
    different = relative_distance(reference, one(is10, Utterance("o", audio=other)))
    for item in (Utterance("s", audio=stereo), Utterance("v", video=clip)):
        features = one(is10, item)
        assert relative_distance(reference, features) < different / 2, item.id


def test_features_follow_pitch_and_loudness(tmp_path, is10) -> None:
    names = is10.feature_names()
    assert len(names) == 1582
    f0 = names.index("F0finEnv_sma_amean")
    low = one(is10, Utterance("low", audio=write_wav(tmp_path / "low.wav", voiced(2.0, f0=110))))
    high = one(is10, Utterance("high", audio=write_wav(tmp_path / "hi.wav", voiced(2.0, f0=220))))
    assert high[f0] / low[f0] == pytest.approx(2.0, rel=0.15)
    quiet = one(is10, Utterance("q", audio=write_wav(tmp_path / "q.wav", 0.3 * voiced(2.0, 110))))
    loudness = names.index("pcm_loudness_sma_amean")
    # openSMILE's loudness is power ** 0.3, so amplitude x 0.3 is loudness x 0.3 ** 0.6.
    assert quiet[loudness] / low[loudness] == pytest.approx(0.3**0.6, rel=0.1)


def test_bad_items_are_errors_and_the_batch_goes_on(tmp_path) -> None:
    extractor = OpenSmileExtractor(feature_set="eGeMAPSv02")
    good = write_wav(tmp_path / "good.wav", voiced(1.0))
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01garbage" * 100)
    items = [
        Utterance("ok1", audio=good),
        Utterance("silent", audio=write_wav(tmp_path / "silent.wav", np.zeros(SR))),
        Utterance("hiss", audio=write_wav(tmp_path / "hiss.wav", np.full(SR, 1e-4))),
        Utterance("missing", audio=tmp_path / "gone.wav"),
        Utterance("ok2", audio=good, start=0.25, end=0.75),
        Utterance("corrupt", audio=tmp_path / "junk.mp4"),
        Utterance("zero", audio=tmp_path / "zero.wav"),
        Utterance("tiny", audio=write_wav(tmp_path / "tiny.wav", voiced(0.005))),
        Utterance("outside", audio=good, start=5.0, end=6.0),
        Utterance("nothing"),
        Utterance("ok3", audio=good),
    ]
    results = dict(zip([i.id for i in items], extractor.extract(items), strict=True))
    for name in ("ok1", "ok2", "ok3"):
        assert isinstance(results[name], Features), results[name]
    assert results["ok2"].seconds == pytest.approx(0.5)  # type: ignore[union-attr]
    expected = {
        "silent": "silent audio",
        "hiss": "silent audio",
        "missing": "missing",
        "corrupt": "corrupt",
        "zero": "zero-length",
        "tiny": "NaN",
        "outside": "starts after the audio ends",
        "nothing": "no audio or video",
    }
    for name, words in expected.items():
        result = results[name]
        assert isinstance(result, ItemError), name
        assert words in result.reason, (name, result.reason)
    # The threshold is the user's: with it off, quiet hiss is kept.
    (kept,) = OpenSmileExtractor(feature_set="eGeMAPSv02", silence_db=None).extract([items[2]])
    assert isinstance(kept, Features)


def test_extractor_pickles_before_and_after_use(tmp_path) -> None:
    extractor = OpenSmileExtractor(feature_set="eGeMAPSv02")
    fresh = pickle.loads(pickle.dumps(extractor))
    item = Utterance("u", audio=write_wav(tmp_path / "u.wav", voiced(1.0)))
    first = one(extractor, item)
    used = pickle.loads(pickle.dumps(extractor))
    assert used._smile is None  # the native handle stays behind; the copy loads its own
    np.testing.assert_array_equal(one(used, item), first)
    np.testing.assert_array_equal(one(fresh, item), first)
    assert fresh.spec() == extractor.spec()


def test_frame_level_features_are_sequences(tmp_path) -> None:
    extractor = OpenSmileExtractor(feature_set="eGeMAPSv02", feature_level="lld", max_frames=50)
    spec = extractor.spec()
    assert spec.kind == "sequence" and spec.shape == (50, 25)
    short = one(extractor, Utterance("s", audio=write_wav(tmp_path / "s.wav", voiced(0.3))))
    (result,) = extractor.extract([Utterance("l", audio=write_wav(tmp_path / "l.wav", voiced(2)))])
    assert isinstance(result, Features) and result.length == 50
    valid = int((np.abs(short).sum(axis=1) > 0).sum())
    assert 20 <= valid < 50 and not short[valid:].any()


ENERGY_CONF = r"""
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
\{\cm[source{?}:source include config]}
[componentInstances:cComponentManager]
instance[frame].type=cFramer
instance[energy].type=cEnergy
instance[func].type=cFunctionals
[frame:cFramer]
reader.dmLevel=wave
writer.dmLevel=frames
frameSize=0.025
frameStep=0.010
[energy:cEnergy]
reader.dmLevel=frames
writer.dmLevel=energy
rms=1
log=0
[func:cFunctionals]
reader.dmLevel=energy
writer.dmLevel=func
frameMode=full
functionalsEnabled=Extremes
Extremes.max=1
Extremes.min=1
Extremes.range=0
Extremes.maxpos=0
Extremes.minpos=0
Extremes.amean=0
Extremes.maxameandist=0
Extremes.minameandist=0
Extremes.norm=frame
\{\cm[sink{?}:include external sink]}
"""


def test_user_config_file(tmp_path) -> None:
    conf = tmp_path / "energy.conf"
    conf.write_text(ENERGY_CONF)
    extractor = OpenSmileExtractor(config=conf)
    spec = extractor.spec()
    assert spec.dim == 2 and len(spec.extractor["config_sha256"]) == 64
    t = np.arange(SR) / SR
    tone = write_wav(tmp_path / "tone.wav", 0.4 * np.sin(2 * np.pi * 300 * t))
    rms_max, rms_min = one(extractor, Utterance("t", audio=tone))
    # RMS of a steady sine of amplitude 0.4 is 0.4 / sqrt(2), in every frame.
    assert rms_max == pytest.approx(0.4 / np.sqrt(2), rel=0.05)
    assert rms_min == pytest.approx(0.4 / np.sqrt(2), rel=0.05)
    conf.write_text(ENERGY_CONF.replace("rms=1", "rms=1\nlog=1"))
    assert OpenSmileExtractor(config=conf).spec().extractor != spec.extractor


def test_option_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="IS99.*known:.*eGeMAPSv02.*IS10"):
        OpenSmileExtractor(feature_set="IS99")
    with pytest.raises(ConfigError, match="does not exist"):
        OpenSmileExtractor(config=tmp_path / "none.conf")
    with pytest.raises(ConfigError, match="feature level"):
        OpenSmileExtractor(feature_level="frames")
    broken = tmp_path / "broken.conf"
    broken.write_text("[componentInstances:cComponentManager]\ninstance[x].type=cNoSuchComponent\n")
    with pytest.raises(ConfigError, match="broken.conf.*cNoSuchComponent"):
        OpenSmileExtractor(config=broken).spec()


def test_registered_and_used_by_the_extraction_run(tmp_path) -> None:
    import pandas as pd

    from emomatch.corpora import write_manifest
    from emomatch.extract import EXTRACTORS
    from emomatch.extract.run import run_extraction
    from emomatch.store import FeatureStore

    assert EXTRACTORS.get("opensmile") is OpenSmileExtractor
    long = write_wav(tmp_path / "media" / "long.wav", voiced(4.0))
    rows = [
        {"id": "a", "audio": "media/long.wav", "start": 0.0, "end": 1.5, "label": "neu"},
        {"id": "b", "audio": "media/long.wav", "start": 1.5, "end": 4.0, "label": "ang"},
        {"id": "c", "audio": "media/none.wav", "start": None, "end": None, "label": "ang"},
    ]
    df = pd.DataFrame(rows).assign(video="", text="", speaker="s1", split="train")
    write_manifest(df, tmp_path / "manifest.csv")
    extractor = OpenSmileExtractor(feature_set="eGeMAPSv02")
    summary = run_extraction(
        tmp_path / "manifest.csv",
        tmp_path / "store",
        {"acoustic": extractor},
        workers=2,
        chunk_size=1,
        progress=False,
    )
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.media_seconds == pytest.approx(4.0)
    store = FeatureStore(tmp_path / "store")
    row = int(np.flatnonzero(store.index["id"] == "b")[0])
    expected = one(extractor, Utterance("b", audio=long, start=1.5, end=4.0))
    np.testing.assert_allclose(store.fetch("acoustic", np.array([row]))[0], expected, rtol=1e-6)
