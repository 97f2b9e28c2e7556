"""Applying a bundle to media: a tiny model trained on generated clips extracted with the real
extractors (openSMILE, Haar + mini-Xception, MiniLM), then `emomatch predict` and the API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import emomatch
from emomatch.bundle import Predictor
from emomatch.cli import app
from emomatch.demo import MEDIA_EXTRACTORS
from emomatch.errors import DataError
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.runs import train_and_report
from emomatch.store import FeatureStore
from emomatch.synthetic.media import write_media_corpus
from tests.support.builders import make_config

runner = CliRunner()
CLASSES = ("happy", "sad")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    manifest = write_media_corpus(
        root / "media", per_class_labeled=3, unlabeled=0, seconds=1.0, classes=CLASSES
    )
    store = root / "store"
    extractors = build_extractors(["acoustic", "visual", "lexical"], MEDIA_EXTRACTORS)
    run_extraction(manifest, store, extractors, progress=False)
    cfg = make_config(
        store,
        data={"store": str(store), "missing": "mask"},
        loss={"unlabeled": False},
        train={"max_epochs": 2},
    )
    train_and_report(cfg, root / "run")
    result = runner.invoke(
        app, ["export", str(root / "run"), "--out", str(root / "bundle"), "--archive"]
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "manifest": manifest, "store": store, "bundle": root / "bundle"}


@pytest.fixture(scope="module")
def predictor(media) -> Predictor:
    return emomatch.load(media["bundle"], transcribe=False)


def _row(media, uid: str) -> pd.Series:
    df = pd.read_csv(media["manifest"], keep_default_na=False)
    return df.set_index("id").loc[uid]


def test_a_clip_from_file_to_label_matches_its_training_features(media, predictor) -> None:
    uid = "train_00000"
    row = _row(media, uid)
    folder = media["manifest"].parent
    got = predictor.predict(video=folder / row.video, audio=folder / row.audio, text=row.text)
    assert got.modalities == ["acoustic", "visual", "lexical"] and got.missing == {}
    assert got.label in CLASSES
    assert sum(got.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # the same clip's features in the training store give the same answer: the rebuilt
    # extractors make exactly the training features
    fs = FeatureStore(media["store"])
    at = np.flatnonzero(fs.index["id"].to_numpy() == uid)
    stored = predictor.predict_features(
        {m: fs.fetch(m, at) for m in predictor.modalities},
        {m: fs.lengths(m, at) for m in predictor.modalities},
    )[0]
    np.testing.assert_allclose([got.probabilities[c] for c in predictor.labels], stored, atol=2e-4)
    assert json.loads(json.dumps(got.to_dict()))["label"] == got.label


def test_missing_modalities_still_get_a_prediction(media, predictor) -> None:
    sentence = predictor.predict(text="I am so happy, this is wonderful!")
    assert sentence.modalities == ["lexical"]
    assert set(sentence.missing) == {"acoustic", "visual"}
    row = _row(media, "train_00001")
    voice = predictor.predict(audio=media["manifest"].parent / row.audio)
    assert voice.modalities == ["acoustic"]
    assert voice.missing["visual"] == "no video"
    assert voice.missing["lexical"].startswith("no transcript")
    # the generated videos are silent: the face alone is used, the soundtrack's absence named
    face = predictor.predict(video=media["manifest"].parent / row.video)
    assert face.modalities == ["visual"] and "no audio stream" in face.missing["acoustic"]
    with pytest.raises(DataError, match="nothing to predict"):
        predictor.predict()
    with pytest.raises(DataError, match="file missing"):
        predictor.predict(video=media["root"] / "nope.mp4")


def test_manifest_is_batched_and_equals_clip_by_clip(media, predictor) -> None:
    many = predictor.predict_manifest(media["manifest"])
    assert [p.id for p in many] == list(pd.read_csv(media["manifest"])["id"])
    row = _row(media, many[2].id)
    folder = media["manifest"].parent
    one = predictor.predict(video=folder / row.video, audio=folder / row.audio, text=row.text)
    assert one.probabilities == pytest.approx(many[2].probabilities, abs=2e-4)


def test_windows_over_a_recording(media, predictor) -> None:
    assert Predictor.windows(13.0, 5.0) == [(0.0, 5.0), (5.0, 10.0), (10.0, 13.0)]
    # the windows cover the whole recording: a short last window is kept, a stub too short to
    # extract joins the window before it
    assert Predictor.windows(12.0, 5.0) == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]
    assert Predictor.windows(10.1, 5.0) == [(0.0, 5.0), (5.0, 10.1)]
    assert Predictor.windows(3.0, 5.0) == [(0.0, 3.0)]
    assert Predictor.windows(6.0, 4.0, hop=2.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 6.0)]
    audio = media["manifest"].parent / _row(media, "train_00000").audio
    windows = predictor.predict_segments(audio=audio, width=0.5)
    assert [(w.start, w.end) for w in windows] == [(0.0, 0.5), (0.5, 1.0)]
    timed = predictor.predict_segments(audio=audio, text=[(0.1, 0.6, "so happy")])
    assert [(w.start, w.end, w.text) for w in timed] == [(0.1, 0.6, "so happy")]
    assert timed[0].modalities == ["acoustic", "lexical"]


def test_extractors_follow_the_record_and_refuse_what_they_cannot_make(media, tmp_path) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(media["bundle"], copy)
    meta = json.loads((copy / "bundle.json").read_text())
    # a setting the record holds is what the rebuilt extractor uses
    meta["features"]["lexical"]["extractor"]["pooling"] = "first"
    (copy / "bundle.json").write_text(json.dumps(meta))
    assert emomatch.load(copy).extractors["lexical"].spec().extractor["pooling"] == "first"
    # one this installation cannot reproduce (another openSMILE) is refused, named
    meta["features"]["acoustic"]["extractor"]["opensmile_version"] = "0.0.1"
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(
        DataError,
        match=r"acoustic\.opensmile_version: this installation has '[\d.]+', the model was "
        r"trained on '0\.0\.1'",
    ):
        emomatch.load(copy)


def test_cli_formats(media) -> None:
    folder = media["manifest"].parent
    row = _row(media, "test_00004")
    # a video and an audio file of the same name are one clip
    clip = [str(folder / row.video), str(folder / row.audio), "--text", row.text, "--no-asr"]
    base = ["predict", str(media["bundle"]), *clip]
    as_csv = runner.invoke(app, [*base, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 1 and rows[0]["label"] in CLASSES
    assert rows[0]["modalities"] == "acoustic+visual+lexical" and rows[0]["id"] == "test_00004"
    assert float(rows[0]["p_happy"]) + float(rows[0]["p_sad"]) == pytest.approx(1, abs=1e-5)
    as_json = runner.invoke(app, [*base, "--format", "json"])
    assert json.loads(as_json.stdout)[0]["label"] == rows[0]["label"]
    out = media["root"] / "out.jsonl"
    archive = str(media["root"] / "bundle.tar.gz")
    as_jsonl = runner.invoke(
        app, ["predict", archive, *clip, "--format", "jsonl", "--out", str(out)]
    )
    assert as_jsonl.exit_code == 0, as_jsonl.output
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["label"] == rows[0]["label"]


def test_cli_sentence_folder_and_windows(media) -> None:
    bundle = str(media["bundle"])
    sentence = runner.invoke(
        app, ["predict", bundle, "--text", "What a lovely day!", "--format", "json"]
    )
    assert sentence.exit_code == 0, sentence.output
    assert json.loads(sentence.stdout)[0]["modalities"] == ["lexical"]
    folder = runner.invoke(
        app,
        ["predict", bundle, str(media["manifest"].parent / "audio"), "--no-asr", "--no-progress"],
    )
    assert folder.exit_code == 0, folder.output
    assert len(list(csv.DictReader(io.StringIO(folder.stdout)))) == 6
    assert "lack the lexical modality" in folder.stderr
    audio = media["manifest"].parent / _row(media, "train_00000").audio
    plot = media["root"] / "over_time.png"
    windows = runner.invoke(
        app,
        ["predict", bundle, str(audio), "--segments", "0.5", "--plot", str(plot), "--no-asr"],
    )
    assert windows.exit_code == 0, windows.output
    times = [(r["start"], r["end"]) for r in csv.DictReader(io.StringIO(windows.stdout))]
    assert times == [("0.0", "0.5"), ("0.5", "1.0")]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    transcript = media["root"] / "timed.csv"
    transcript.write_text("id,start,end,text\na,0.0,0.4,I am so sad\nb,0.4,0.9,so sad\n")
    timed = runner.invoke(
        app, ["predict", bundle, str(audio), "--transcripts", str(transcript), "--format", "json"]
    )
    assert timed.exit_code == 0, timed.output
    got = json.loads(timed.stdout)
    assert [(w["start"], w["end"], w["text"]) for w in got] == [
        (0.0, 0.4, "I am so sad"),
        (0.4, 0.9, "so sad"),
    ]


def test_cli_errors_are_one_line(media, tmp_path) -> None:
    bundle = str(media["bundle"])
    for args, message in (
        ([bundle], "nothing to predict"),
        ([bundle, str(tmp_path / "nope.mp4")], "does not exist"),
        ([bundle, "--text", "hi", "--format", "xml"], "--format must be"),
        ([str(tmp_path), "--text", "hi"], "bundle.json is missing"),
        ([bundle, "--text", "hi", "--plot", str(tmp_path / "p.png")], "needs windows"),
    ):
        result = runner.invoke(app, ["predict", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "error: " in result.output and message in result.output, result.output


def test_speech_to_text_fills_a_missing_transcript(media) -> None:
    from emomatch.extract.asr import asr_available

    if not asr_available():
        pytest.skip("faster-whisper and its bundled model are not installed (the asr extra)")
    p = emomatch.load(media["bundle"], transcribe=True)
    audio = media["manifest"].parent / _row(media, "train_00001").audio
    got = p.predict(audio=audio)
    # the generated speech is babble: whatever Whisper hears, the lexical modality is either
    # used with that text, or missing because nothing was heard
    if got.text:
        assert got.asr and "lexical" in got.modalities
    else:
        assert got.missing["lexical"].startswith("no transcript")


class RefusingTranscriber:
    """Speech-to-text that hears speech it will not vouch for (another language, say)."""

    note = ""

    def __call__(self, path: object, start: object = None, end: object = None) -> str:
        self.note = "refused: the speech is de (p=0.97), not en"
        return ""


def test_a_refused_transcript_says_why_in_missing(media, predictor) -> None:
    """A clip whose speech-to-text was refused says so where the prediction lists what it could
    not use, not "no speech found"."""
    audio = media["manifest"].parent / _row(media, "train_00001").audio
    predictor.preprocess._transcriber = RefusingTranscriber()
    try:
        got = predictor.predict(audio=audio)
    finally:
        predictor.preprocess._transcriber = None
    assert got.missing["lexical"] == (
        "no transcript (speech-to-text refused: the speech is de (p=0.97), not en)"
    )
    assert not got.asr and "acoustic" in got.modalities


def test_a_model_of_generated_clips_says_so_and_warns_on_other_media(
    media, predictor, tmp_path, caplog
) -> None:
    import logging

    from emomatch.bundle import read_bundle
    from emomatch.extract.mediawrite import write_wav

    bundle = read_bundle(media["bundle"])
    record = bundle.meta["training_data"]
    assert record["synthetic"] is True and record["classes"] == list(CLASSES)
    assert "synthetic" in predictor.trained_on and "trained on synthetic data only" in bundle.card
    recording = write_wav(
        tmp_path / "mine.wav", 0.2 * np.random.default_rng(1).standard_normal(16000)
    )
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(
            app, ["predict", str(media["bundle"]), str(recording), "--no-asr", "--no-progress"]
        )
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if "synthetic data only" in r.getMessage()]
    assert len(warned) == 1 and "emomatch synthetic clips" in warned[0]


def test_predictor_is_callable_by_suffix_or_sentence(media, predictor) -> None:
    row = _row(media, "train_00001")
    folder = media["manifest"].parent
    by_call = predictor(str(folder / row.audio))
    assert by_call.probabilities == predictor.predict(audio=folder / row.audio).probabilities
    assert (
        predictor(folder / row.video).modalities
        == predictor.predict(video=folder / row.video).modalities
    )
    assert (
        predictor("What a day").probabilities == predictor.predict(text="What a day").probabilities
    )
    with pytest.raises(DataError, match="not a video or audio file name"):
        predictor(Path("notes.txt"))


def test_a_prediction_manifest_needs_only_id_and_one_input(media, predictor, tmp_path) -> None:
    folder = media["manifest"].parent
    row = _row(media, "train_00000")
    manifest = tmp_path / "few.csv"
    manifest.write_text(f"id,audio\nclip,{folder / row.audio}\n")
    (got,) = predictor.predict_manifest(manifest)
    assert got.label in CLASSES and got.modalities == ["acoustic"]
    only_text = tmp_path / "text.jsonl"
    only_text.write_text('{"id": "s", "text": "What a day"}\n')
    assert predictor.predict_manifest(only_text)[0].modalities == ["lexical"]
    nothing = tmp_path / "ids.csv"
    nothing.write_text("id,speaker\nx,y\n")
    with pytest.raises(DataError, match="audio, video or text"):
        predictor.predict_manifest(nothing)


def test_evaluate_a_bundle_on_labelled_clips_and_on_a_store(media) -> None:
    labelled = pd.read_csv(media["manifest"], keep_default_na=False)
    n = int((labelled["label"] != "").sum())
    result = runner.invoke(
        app, ["evaluate", str(media["bundle"]), str(media["manifest"]), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "WAP" in result.output and f"n={n}" in result.output
    on_store = runner.invoke(
        app, ["evaluate", str(media["bundle"]), str(media["store"]), "--split", "test"]
    )
    assert on_store.exit_code == 0, on_store.output
    tests = int((labelled["split"] == "test").sum())
    assert f"n={tests}" in on_store.output
    without = runner.invoke(app, ["evaluate", str(media["bundle"])])
    assert without.exit_code == 2 and "labelled clips" in without.output
