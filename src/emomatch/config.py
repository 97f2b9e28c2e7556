"""Experiment configuration: validated YAML, overridable from the command line.

Unknown or ill-typed keys are errors that name the key (``loss.alpah: extra inputs are not
permitted``), so a typo never silently runs the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emomatch.errors import ConfigError

Modality = Literal["acoustic", "visual", "lexical"]
ALL_MODALITIES: tuple[Modality, ...] = ("acoustic", "visual", "lexical")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    store: Path
    #: a second store holding the unlabeled pool (e.g. AMI windows); None: use ``unlabeled_split``
    #: rows of ``store``
    unlabeled_store: Path | None = None
    modalities: list[Modality] = Field(default_factory=lambda: list(ALL_MODALITIES))
    #: index column that assigns each utterance to a split (e.g. ``split`` or ``fold_3``)
    split_field: str = "split"
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    unlabeled_split: str = "unlabeled"
    #: utterances missing a used modality (e.g. no face found): ``drop`` leaves them out of the
    #: run (counted in the log), as the paper drops faceless AMI windows; ``mask`` keeps them
    #: with that modality's latent zeroed and its reconstruction and matching terms masked
    missing: Literal["drop", "mask"] = "drop"
    #: optional expected feature shapes, checked against the store, e.g. {acoustic: [1582]}
    expect_shapes: dict[str, list[int]] = Field(default_factory=dict)

    @field_validator("modalities")
    @classmethod
    def _nonempty_unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one modality is needed")
        if len(set(v)) != len(v):
            raise ValueError("modalities repeat")
        return v


class ModelConfig(_Strict):
    latent_dim: int = Field(128, ge=1)
    acoustic_hidden: list[int] = Field(default_factory=lambda: [512, 256])
    visual_hidden: list[int] = Field(default_factory=list)
    lexical_hidden: list[int] = Field(default_factory=lambda: [512])
    #: attention heads asked for; the largest count <= this that divides the width is used
    heads: int = Field(4, ge=1)
    transformer_layers: int = Field(2, ge=1)
    feedforward_dim: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    #: pre-norm Transformer blocks (LayerNorm before attention/feed-forward) with a final
    #: LayerNorm after the stack; False = post-norm. Post-norm blocks at Adam 1e-3 without
    #: warm-up barely trained on real MELD text (docs/method.md).
    norm_first: bool = True
    #: position code added to the input of the sequence encoders' and decoders' Transformers:
    #: ``sinusoidal`` (Vaswani et al.), ``learned`` (one vector per position) or ``none``
    #: (self-attention then cannot see frame or word order)
    positional: Literal["sinusoidal", "learned", "none"] = "sinusoidal"
    classifier_hidden: list[int] = Field(default_factory=lambda: [128])


class LossConfig(_Strict):
    alpha: float = Field(0.2, ge=0.0)
    beta: float = Field(0.1, ge=0.0)
    omega: float = Field(0.3, ge=0.0)
    #: Table 7 ablation switches
    reconstruction: bool = True
    matching: bool = True
    unlabeled: bool = True
    #: matching measure: ``pairwise`` (pairing-aware, default) or ``batch`` (literal Eq. 3)
    measure: str = "pairwise"
    bandwidth: Literal["median", "fixed", "multi"] = "median"
    sigma: float = Field(1.0, gt=0.0)
    #: multipliers of the median bandwidth whose kernels ``multi`` mode averages
    sigma_scales: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    #: ``paper``: (A,V) and (A,L) with three modalities, the one pair with two; ``all``: all pairs
    pairs: Literal["paper", "all"] = "paper"
    class_weights: bool = False

    @field_validator("measure")
    @classmethod
    def _known_measure(cls, v: str) -> str:
        # Imported here: the registry lives with the model, which itself reads this module.
        from emomatch.model.matching import MEASURES

        if v not in MEASURES:
            raise ValueError(f"unknown measure {v!r}; known: {', '.join(MEASURES.names())}")
        return v


class TrainConfig(_Strict):
    batch_size: int = Field(128, ge=2)
    unlabeled_batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    max_epochs: int = Field(20, ge=1)
    #: validation metric that selects the checkpoint (ua for IEMOCAP, weighted_f1 for MELD)
    select_metric: Literal["ua", "wa", "wap", "weighted_f1", "macro_f1"] = "ua"
    accelerator: str = "auto"
    devices: int | str = "auto"
    #: ``auto``: 16-bit mixed precision on CUDA, 32-bit elsewhere
    precision: str = "auto"
    num_workers: int = Field(0, ge=0)
    progress_bar: bool = True
    deterministic: bool = False


class ExperimentConfig(_Strict):
    seed: int = 0
    data: DataConfig
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    @property
    def semi_supervised(self) -> bool:
        return self.loss.unlabeled

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["loss.alpha=0.5", "data.modalities=[acoustic, lexical]"]`` -> a nested dict; values
    are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw else "")
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate; relative paths in ``data``
    resolve against the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = _merge(raw, parse_overrides(overrides or []))
    cfg = config_from_dict(raw, str(path))
    base = path.resolve().parent
    if not cfg.data.store.is_absolute():
        cfg.data.store = base / cfg.data.store
    if cfg.data.unlabeled_store is not None and not cfg.data.unlabeled_store.is_absolute():
        cfg.data.unlabeled_store = base / cfg.data.unlabeled_store
    return cfg
