"""The raw-media demo corpus: valid files and manifest, reproducible, emotion shows in every
modality the way it was meant to."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emomatch.corpora.manifest import read_manifest, validate_manifest
from emomatch.errors import DataError
from emomatch.synthetic.media import PROFILES, profile_for, write_media_corpus

CLASSES = ("angry", "happy", "neutral", "sad")
CLEAR = {"audio": 0.0, "video": 0.0, "text": 0.0}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as fh:
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), "<i2") / 32768.0
        return pcm, fh.getframerate()


def read_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def pitch_hz(signal: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch over the loud frames (written independently of the
    generator, which never computes pitch from a signal)."""
    frame, hop = 640, 320
    starts = range(0, len(signal) - frame, hop)
    rms = np.array([np.sqrt(np.mean(signal[i : i + frame] ** 2)) for i in starts])
    found = []
    lo, hi = rate // 500, rate // 60
    for i, level in zip(starts, rms, strict=True):
        if level < 0.3 * rms.max():
            continue
        x = signal[i : i + frame] - signal[i : i + frame].mean()
        ac = np.correlate(x, x, "full")[frame - 1 :]
        found.append(rate / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(found))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("media")
    return write_media_corpus(
        out, per_class_labeled=8, unlabeled=40, seed=3, seconds=1.5, uninformative=CLEAR
    )


@pytest.fixture(scope="module")
def table(corpus) -> pd.DataFrame:
    return read_manifest(corpus)


def test_files_decode_and_manifest_validates(corpus, table) -> None:
    assert validate_manifest(table, classes=CLASSES) == []
    assert len(table) == 8 * 4 + 40
    labeled = table[table["split"] != "unlabeled"]
    assert set(table["split"]) == {"train", "validation", "test", "unlabeled"}
    assert (table.loc[table["split"] == "unlabeled", "label"] == "").all()
    assert (labeled["label"] == labeled["true_emotion"]).all()
    # 8 per class split 50/20/30 -> 4/1.6/2.4 -> 4/2/2, every class in every split
    per_split = labeled.groupby(["split", "label"]).size().unstack()
    assert per_split.loc["train"].tolist() == [4] * 4
    assert per_split.loc["validation"].tolist() == [2] * 4
    assert per_split.loc["test"].tolist() == [2] * 4
    speakers = table.groupby("split")["speaker"].apply(set)
    splits = list(speakers.index)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not speakers[a] & speakers[b], f"{a} and {b} share speakers"
    for row in table.itertuples():
        audio, rate = read_wav(corpus.parent / row.audio)
        assert rate == 16000 and len(audio) == 24000 and np.abs(audio).max() > 0.01
        assert row.text.strip() and row.text.split()[0][0].isupper()
    frames = read_frames(corpus.parent / table["video"].iloc[0])
    assert frames.shape == (18, 96, 96, 3)  # 1.5 s at 12 fps


def test_same_seed_same_corpus_whatever_the_workers(tmp_path) -> None:
    args = {"per_class_labeled": 3, "unlabeled": 4, "seconds": 1.0}
    first = write_media_corpus(tmp_path / "a", seed=7, **args)
    again = write_media_corpus(tmp_path / "b", seed=7, workers=2, **args)
    other = write_media_corpus(tmp_path / "c", seed=8, **args)
    a, b, c = (pd.read_csv(m, dtype=str, keep_default_na=False) for m in (first, again, other))
    pd.testing.assert_frame_equal(a, b)
    assert not a["text"].equals(c["text"])
    for row in a.itertuples():
        assert (first.parent / row.audio).read_bytes() == (again.parent / row.audio).read_bytes()
        np.testing.assert_array_equal(
            read_frames(first.parent / row.video), read_frames(again.parent / row.video)
        )
    wav_a = (first.parent / a["audio"].iloc[0]).read_bytes()
    assert wav_a != (other.parent / c["audio"].iloc[0]).read_bytes()


def test_pitch_and_loudness_follow_the_emotion(corpus, table) -> None:
    stats = []
    for row in table.itertuples():
        audio, rate = read_wav(corpus.parent / row.audio)
        stats.append(
            {
                "speaker": row.speaker,
                "emotion": row.true_emotion,
                "pitch": pitch_hz(audio, rate),
                "rms": float(np.sqrt(np.mean(audio**2))),
            }
        )
    df = pd.DataFrame(stats)
    # Within a speaker (voices differ by an octave between speakers), in semitones.
    df["semitones"] = 12 * np.log2(df["pitch"] / df.groupby("speaker")["pitch"].transform("mean"))
    mean = df.groupby("emotion")[["semitones", "rms"]].mean()
    assert mean.loc["angry", "semitones"] > mean.loc["neutral", "semitones"] + 1
    assert mean.loc["happy", "semitones"] > mean.loc["neutral", "semitones"] + 1
    assert mean.loc["sad", "semitones"] < mean.loc["neutral", "semitones"] - 0.5
    assert mean.loc["angry", "rms"] > mean.loc["neutral", "rms"] > mean.loc["sad", "rms"]


def mouth_bend(gray: np.ndarray) -> float:
    """How the upper edge of the dark mouth bends across the lower face of a 96 x 96 frame:
    negative when the corners are higher than the middle (a smile), positive for a frown."""
    region = gray[56:86, 24:72]
    skin = np.median(region)
    dark = (skin - region) > 0.35 * skin
    cols = np.flatnonzero(dark.any(axis=0))
    assert len(cols) >= 5, "no mouth found"
    tops = np.array([np.argmax(dark[:, c]) for c in cols])
    return float(np.polyfit(cols - cols.mean(), tops, 2)[0])


def test_faces_show_the_emotion_and_are_detectable(corpus, table) -> None:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    bends: dict[str, list[float]] = {e: [] for e in CLASSES}
    found = []
    for row in table.itertuples():
        gray = read_frames(corpus.parent / row.video).mean(axis=3)
        found.append(len(cascade.detectMultiScale(gray[0].astype(np.uint8), 1.1, 3)) > 0)
        bends[row.true_emotion].append(float(np.median([mouth_bend(g) for g in gray])))
    assert np.mean(found) > 0.9  # OpenCV's default face detector sees the drawn faces
    happy, neutral, sad = (np.array(bends[e]) for e in ("happy", "neutral", "sad"))
    assert happy.mean() < neutral.mean() < sad.mean()
    # Clearly apart, not by chance: most smiles bend more than the typical frown.
    assert np.mean(happy < np.median(sad)) > 0.8
    assert happy.mean() + 2 * happy.std() / np.sqrt(len(happy)) < sad.mean()


def test_unlabeled_pool_is_skewed_towards_neutral(table) -> None:
    pool = table.loc[table["split"] == "unlabeled", "true_emotion"].value_counts()
    # default mix angry 10 %, happy 25 %, neutral 50 %, sad 15 % of 40
    assert pool.to_dict() == {"neutral": 20, "happy": 10, "sad": 6, "angry": 4}


def test_words_carry_the_emotion_unless_uninformative(table, tmp_path) -> None:
    def tinted(text: str, emotion: str) -> bool:
        words = {w.strip(".!").lower() for w in text.split()}
        return bool(words & set(PROFILES[emotion].words))

    for row in table.itertuples():
        if row.true_emotion != "neutral":
            assert tinted(row.text, row.true_emotion), row.text
    plain = read_manifest(
        write_media_corpus(
            tmp_path, per_class_labeled=3, unlabeled=0, seconds=0.5, uninformative={"text": 1.0}
        )
    )
    for row in plain.itertuples():
        assert not any(tinted(row.text, e) for e in ("angry", "happy", "sad")), row.text


def test_bad_arguments_are_named(tmp_path) -> None:
    with pytest.raises(DataError, match="per_class_labeled"):
        write_media_corpus(tmp_path, per_class_labeled=2)
    with pytest.raises(DataError, match="unlabeled_mix"):
        write_media_corpus(tmp_path, unlabeled_mix=(1, 1))
    with pytest.raises(DataError, match="classes"):
        write_media_corpus(tmp_path, classes=("happy", "happy"))
    with pytest.raises(DataError, match="uninformative"):
        write_media_corpus(tmp_path, uninformative={"smell": 0.5})


def test_corpus_label_sets_other_than_the_default(tmp_path) -> None:
    classes = ("ang", "hap", "neu", "sad", "fru")  # IEMOCAP's short names, one unknown emotion
    manifest = write_media_corpus(
        tmp_path,
        per_class_labeled=3,
        unlabeled=16,
        seconds=0.5,
        classes=classes,
        uninformative=CLEAR,
    )
    table = read_manifest(manifest)
    assert validate_manifest(table, classes=classes) == []
    pool = table.loc[table["split"] == "unlabeled", "true_emotion"].value_counts()
    assert pool.index[0] == "neu" and pool.sum() == 16
    own = set(profile_for("fru").words)
    for text in table.loc[table["true_emotion"] == "fru", "text"]:
        assert {w.strip(".!").lower() for w in text.split()} & own, text
