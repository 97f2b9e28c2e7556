"""Experiment configuration: validated YAML, overridable from the command line.

Unknown or ill-typed keys are errors that name the key (``loss.alpah: extra inputs are not
permitted``), so a typo never silently runs the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emomatch.domain import BUILTIN_MEASURES
from emomatch.errors import ConfigError

Modality = Literal["acoustic", "visual", "lexical"]
ALL_MODALITIES: tuple[Modality, ...] = ("acoustic", "visual", "lexical")
Logger = Literal["csv", "tensorboard"]


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite weight, rate or width would only show up as a
    # NaN loss hours later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_huge_int(cls, v: Any) -> Any:
        # 10**30 epochs or units is a typo; past 2**31 numpy and torch fail with a traceback
        values = v if isinstance(v, list) else list(v.values()) if isinstance(v, dict) else [v]
        for item in values:
            for n in item if isinstance(item, list) else [item]:
                if isinstance(n, int) and not isinstance(n, bool) and abs(n) >= 2**31:
                    raise ValueError(f"{n} is out of range (at most {2**31 - 1})")
        return v


class DataConfig(_Strict):
    store: Path
    #: a second store holding the unlabeled pool (e.g. AMI windows); None: use ``unlabeled_split``
    #: rows of ``store``
    unlabeled_store: Path | None = None
    modalities: list[Modality] = Field(default_factory=lambda: list(ALL_MODALITIES))
    #: index column that assigns each utterance to a split (e.g. ``split`` or ``fold_3``)
    split_field: str = "split"
    #: one split value, or several pooled (e.g. [train, validation] with ``train.select: last``)
    train_split: str | list[str] = "train"
    #: also one value or several: with ``split_field: speaker``, e.g. two validation speakers
    #: (selection on one small speaker is noise: docs/method.md)
    validation_split: str | list[str] = "validation"
    test_split: str | list[str] = "test"
    unlabeled_split: str = "unlabeled"
    #: where the unlabelled pool comes from: ``split`` = the ``unlabeled_split`` rows (of
    #: ``unlabeled_store`` where given); ``train_rest`` = the training split's utterances that
    #: ``train_fraction`` left unlabelled (the low-label protocol: one corpus, its labels hidden)
    unlabeled_pool: Literal["split", "train_rest"] = "split"
    #: the z-normalisation statistics: ``labeled`` = of the labelled training utterances (the
    #: paper); ``labeled_and_pool`` = of those and the unlabelled pool together (with few labels,
    #: 96 utterances' means and stds of 259 dimensions are noisy; the pool's features are there
    #: anyway). Fully supervised runs have no pool and use ``labeled`` either way
    normalize_on: Literal["labeled", "labeled_and_pool"] = "labeled"
    #: utterances missing a used modality (e.g. no face found): ``drop`` leaves them out of the
    #: run (counted in the log), as the paper drops faceless AMI windows; ``mask`` keeps them
    #: with that modality's latent zeroed and its reconstruction and matching terms masked
    missing: Literal["drop", "mask"] = "drop"
    #: optional expected feature shapes, checked against the store, e.g. {acoustic: [1582]}
    expect_shapes: dict[str, list[int]] = Field(default_factory=dict)
    #: share of the labelled training split kept (class-stratified, at least one utterance per
    #: class): the low-label experiments; validation and test are never subsampled
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    #: share of the unlabelled pool kept, or (``unlabeled_count``) how many utterances; both
    #: draws are uniform without replacement
    unlabeled_fraction: float = Field(1.0, gt=0.0, le=1.0)
    unlabeled_count: int | None = Field(None, ge=1)
    #: seed of the two subsamples above, apart from ``seed``: runs that differ only in their
    #: training seed see the same utterances, and a smaller subsample is part of a larger one
    subsample_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _splits_apart(self) -> DataConfig:
        values = {}
        for key in ("train_split", "validation_split", "test_split"):
            value = getattr(self, key)
            values[key] = {value} if isinstance(value, str) else set(value)
            if not values[key]:
                raise ValueError(f"{key} is an empty list; give at least one split value")
        # Pooling validation into training is a documented choice (select: last); test is not.
        for key in ("train_split", "validation_split"):
            if shared := values[key] & values["test_split"]:
                raise ValueError(
                    f"{key} and test_split share {sorted(shared)}: the test split must stay unseen"
                )
        return self

    @model_validator(mode="after")
    def _rest_of_one_store(self) -> DataConfig:
        if self.unlabeled_pool == "train_rest" and self.unlabeled_store is not None:
            raise ValueError(
                "unlabeled_pool: train_rest takes the pool from store; drop unlabeled_store"
            )
        return self

    @model_validator(mode="after")
    def _one_pool_size(self) -> DataConfig:
        if self.unlabeled_count is not None and self.unlabeled_fraction != 1.0:
            raise ValueError("give unlabeled_fraction or unlabeled_count, not both")
        return self

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
    #: dropout after each hidden layer of the acoustic encoder and of the classifier (the
    #: paper's MLPs have none; measured on EmoDB, docs/method.md)
    mlp_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: dropout on each modality's (normalised) input while training; the reconstruction target
    #: stays the clean input, which makes the auto-encoders denoising ones
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0)


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
    #: share of the target mass spread evenly over all classes in the cross-entropy (0: off);
    #: for corpora whose labels are noisy, like MELD's (docs/benchmarks.md)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    #: --- learning from the unlabelled stream beyond the paper's L_u (docs/method.md) ---
    #: confidence-thresholded pseudo-labels (FixMatch, Sohn et al. 2020): where the teacher's
    #: top class probability on the clean view is at least this, that class is the target of
    #: the cross-entropy on the perturbed view; None = off (the paper)
    pseudo_threshold: float | None = Field(None, ge=0.0, le=1.0)
    pseudo_weight: float = Field(1.0, ge=0.0)
    #: consistency (Pi-model / Mean Teacher): squared distance between the class probabilities
    #: on the perturbed view and the teacher's on the clean view, every unlabelled utterance;
    #: 0 = off (the paper)
    consistency_weight: float = Field(0.0, ge=0.0)
    #: the perturbed view: Gaussian noise of this std on the z-normalised features ...
    view_noise: float = Field(0.5, ge=0.0)
    #: ... and each modality made absent with this chance (never every modality of one
    #: utterance): a prediction from the voice alone is then taught by the one from face and
    #: voice (cross-modal co-training)
    view_modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    #: the teacher of the two terms above: 0 = the model itself in eval mode (no dropout);
    #: > 0 = an exponential moving average of its weights with this decay (Mean Teacher)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    #: the terms above also on the labelled batch (its labels unused by them), as FixMatch's
    #: unlabelled stream holds the labelled data too
    consistency_on_labeled: bool = False

    @property
    def self_training(self) -> bool:
        """Whether the unlabelled stream gets a prediction term (pseudo-labels or consistency)."""
        return self.pseudo_threshold is not None or self.consistency_weight > 0

    @field_validator("measure")
    @classmethod
    def _known_measure(cls, v: str) -> str:
        if v in BUILTIN_MEASURES:
            return v
        # Only a name emomatch does not ship needs the registry (and so torch): a measure the
        # user registered in it is valid too.
        from emomatch.model.matching import MEASURES

        if v not in MEASURES:
            raise ValueError(f"unknown measure {v!r}; known: {', '.join(MEASURES.names())}")
        return v


class TrainConfig(_Strict):
    batch_size: int = Field(128, ge=2)
    unlabeled_batch_size: int = Field(128, ge=2)
    #: a small training split still gets this many optimizer steps per epoch: the labelled
    #: batch shrinks to ceil(n / min_steps_per_epoch) when that is below ``batch_size``
    #: (0 = always ``batch_size``)
    min_steps_per_epoch: int = Field(0, ge=0)
    #: while training only, each used modality of a labelled utterance is dropped with this
    #: chance (never every modality of one utterance), masked as ``data.missing: mask`` masks
    #: an absent one: a model that still predicts when a clip has no face or no speech. 0 (the
    #: paper) draws nothing
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0.0)
    #: decoupled weight decay (AdamW); 0 with ``optimizer: adam`` is the paper's plain Adam
    optimizer: Literal["adam", "adamw"] = "adamw"
    weight_decay: float = Field(0.0, ge=0.0)
    #: linear learning-rate warm-up over this many epochs (fractions allowed; 0 = none)
    warmup_epochs: float = Field(0.0, ge=0.0)
    #: after warm-up: ``constant`` or ``cosine`` decay to 0 at ``max_epochs``
    schedule: Literal["constant", "cosine"] = "constant"
    max_epochs: int = Field(20, ge=1)
    #: early stopping: stop after this many epochs without a better validation score
    #: (None = train all ``max_epochs``)
    patience: int | None = Field(None, ge=1)
    #: the model kept: ``best`` = selected on the validation metric; ``last`` = the last epoch
    #: (a fixed budget, no selection: validation is only reported)
    select: Literal["best", "last"] = "best"
    #: checkpoint averaging: the kept model is the weights averaged over the ``average`` best
    #: validation epochs (``select: best``) or the ``average`` last epochs (``select: last``)
    average: int = Field(1, ge=1)
    #: validation metric that selects the checkpoint (ua for IEMOCAP, weighted_f1 for MELD)
    select_metric: Literal["ua", "wa", "wap", "weighted_f1", "macro_f1"] = "ua"
    accelerator: str = "auto"
    #: devices per node; several train with DDP (one process each, launched by Lightning or
    #: ``torchrun --nproc_per_node``)
    devices: int | str = "auto"
    #: machines of a multi-node DDP run (``torchrun --nnodes``; README, "Several GPUs or nodes")
    num_nodes: int = Field(1, ge=1)
    #: ``auto``: 16-bit mixed precision on CUDA, 32-bit elsewhere; ``bf16-mixed`` runs matmuls
    #: and convolutions in bfloat16 (float32's range, so no loss scaling: Ampere or newer GPUs,
    #: CPUs with AVX-512 BF16 or AMX); the matching kernels stay float32 in every mode
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = "auto"
    #: activation checkpointing: keep only the auto-encoders' inputs and run their forward again
    #: in the backward pass (the same gradients; at the paper's dims 3.1 GB instead of 5.0 GB
    #: peak for 43 % more step time on CPU: docs/benchmarks.md, bench/paper_scale.py)
    recompute: bool = False
    num_workers: int = Field(0, ge=0)
    #: CPU threads of torch's math (None: ``OMP_NUM_THREADS`` where set, else the CPUs this
    #: process may use: its affinity and cgroup quota, not the host's count; ``--threads N``)
    threads: int | None = Field(None, ge=1)
    progress_bar: bool = True
    #: epoch histories written: ``csv`` (logs/metrics.csv, always kept: reports and resumption
    #: read it) and ``tensorboard`` (event files in logs/tensorboard; needs the ``tensorboard``
    #: package: pip install 'emomatch[tensorboard]')
    loggers: list[Logger] = Field(default_factory=lambda: list[Logger](["csv"]))
    deterministic: bool = False

    @field_validator("loggers")
    @classmethod
    def _csv_kept(cls, v: list[str]) -> list[str]:
        if "csv" not in v:
            raise ValueError("csv must stay among the loggers (reports and --resume read it)")
        if len(set(v)) != len(v):
            raise ValueError("loggers repeat")
        return v


class ExperimentConfig(_Strict):
    #: numpy takes seeds 0 .. 2**32-1
    seed: int = Field(0, ge=0)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    @property
    def semi_supervised(self) -> bool:
        return self.loss.unlabeled

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: key path in a YAML file (``("loss", "alpha")``, list items by index) -> the line it is on
KeyLines = Mapping[tuple[str, ...], int]


def _format_errors(
    exc: ValidationError,
    source: str,
    lines: KeyLines | None = None,
    overridden: set[tuple[str, ...]] | None = None,
) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        where = key_source(loc, source, lines or {}, overridden or set())
        out.append(f"{where}: {'.'.join(loc)}: {err['msg']}")
    return "\n".join(out)


def key_source(
    loc: tuple[str, ...], source: str, lines: KeyLines, overridden: set[tuple[str, ...]]
) -> str:
    """Where a bad key came from: a ``--set`` override, else its (or its section's) line."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in overridden:
            return "--set"
        if loc[:n] in lines:
            return f"{source}, line {lines[loc[:n]]}"
    return source


class _UniqueKeyLoader(yaml.SafeLoader):
    """A key given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # ``<<: *base`` then a key of base is an override, not a repeat
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first on line {first})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """``line L, column C: what`` from a PyYAML error, without its multi-line excerpt."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        return f"line {line}: character {shown} is not allowed in YAML"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(p for p in (exc.context, exc.problem) if p) or "not valid YAML"
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
        return what
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _key_lines(node: yaml.Node | None) -> dict[tuple[str, ...], int]:
    lines: dict[tuple[str, ...], int] = {}
    stack: list[tuple[tuple[str, ...], yaml.Node | None]] = [((), node)]
    visited: set[int] = set()
    # iterative, and each node once: anchors and aliases may share (or nest) nodes
    while stack:
        path, current = stack.pop()
        if current is None or id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            children = [
                ((*path, str(k.value)), k, v)
                for k, v in current.value
                if isinstance(k, yaml.ScalarNode)
            ]
        elif isinstance(current, yaml.SequenceNode):
            children = [((*path, str(i)), v, v) for i, v in enumerate(current.value)]
        else:
            continue
        for child_path, mark_node, child in children:
            lines.setdefault(child_path, mark_node.start_mark.line + 1)
            stack.append((child_path, child))
    return lines


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
        node = child
    last = parts[-1]
    if isinstance(node.get(last), dict) and isinstance(value, dict):
        # loss.alpha=1 then loss={beta: 2}: both hold, the second does not drop the first
        node[last] = merge_dicts(node[last], value)
    else:
        node[last] = value


def split_override(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (dotted key with spaces around its parts removed, raw value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE")
    key, raw = item.split("=", 1)
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise ConfigError(
            f"override {item!r}: {key.strip()!r} is not a key (expected e.g. loss.alpha=0.5)"
        )
    return ".".join(parts), raw


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["loss.alpha=0.5", "data.modalities=[acoustic, lexical]"]`` -> a nested dict; values
    are parsed as YAML. A malformed item is a :class:`ConfigError` naming it."""
    tree: dict[str, Any] = {}
    for item in items:
        key, raw = split_override(item)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc, raw)}); "
                "quote it, e.g. key='value'"
            ) from None
        except RecursionError:
            raise ConfigError(f"override {item!r}: the value is nested too deeply") from None
        _set_dotted(tree, key, value)
    return tree


def merge_dicts(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it: sections merge key by key, other values of
    ``extra`` win."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def config_from_dict(
    raw: dict[str, Any],
    source: str = "config",
    lines: KeyLines | None = None,
    overridden: set[tuple[str, ...]] | None = None,
) -> ExperimentConfig:
    """Validate; errors name the key, with its line in ``source`` where ``lines`` has it."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, lines, overridden)) from None


def read_yaml(path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The parsed file and the line of each key; every failure is one ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}, line {line}: not valid YAML (byte 0x{data[exc.start]:02x} is not UTF-8; "
            "save the file as UTF-8)"
        ) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc, text)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    return raw, _key_lines(node)


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate; relative paths in ``data``
    resolve against the config file's folder. Anything wrong is one :class:`ConfigError` that
    names the file, the line where it applies, and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    extra = parse_overrides(overrides or [])
    raw, lines = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping (data:, model:, ...), "
            f"found a {type(raw).__name__}"
        )
    raw = merge_dicts(raw, extra)
    overridden = {tuple(split_override(item)[0].split(".")) for item in overrides or []}
    cfg = config_from_dict(raw, str(path), lines, overridden)
    base = path.resolve().parent
    if not cfg.data.store.is_absolute():
        cfg.data.store = base / cfg.data.store
    if cfg.data.unlabeled_store is not None and not cfg.data.unlabeled_store.is_absolute():
        cfg.data.unlabeled_store = base / cfg.data.unlabeled_store
    return cfg
