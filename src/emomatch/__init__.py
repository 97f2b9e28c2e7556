"""emomatch: semi-supervised multimodal emotion recognition, cross-modal distribution matching.

The public face, documented in docs/api.md::

    import emomatch
    p = emomatch.load("bundle")              # a Predictor
    p.predict(video="clip.mp4").label
    emomatch.train("config.yaml", out="runs/x")
    emomatch.evaluate("runs/x")
    emomatch.export("runs/x", "bundle")

Everything heavy (torch, Lightning, the extractors) is imported on first use, so that
``import emomatch`` stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emomatch.domain import MODALITIES, __version__

if TYPE_CHECKING:
    from emomatch.bundle import Prediction, Predictor
    from emomatch.config import ExperimentConfig

__all__ = [
    "MODALITIES",
    "Prediction",
    "Predictor",
    "__version__",
    "evaluate",
    "export",
    "load",
    "train",
]


def load(
    bundle: str | Path,
    device: str = "cpu",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    transcribe: bool | None = None,
    batch_size: int = 16,
) -> Predictor:
    """A :class:`~emomatch.bundle.Predictor` for a bundle written by ``emomatch export``
    (folder or archive); see :func:`emomatch.bundle.load`."""
    from emomatch.bundle import load as load_bundle

    return load_bundle(bundle, device, options, transcribe, batch_size)


def export(
    run: str | Path, out: str | Path, archive: bool = False, store: str | Path | None = None
) -> dict[str, Path]:
    """``emomatch export``: a finished run as a model bundle; see
    :func:`emomatch.bundle.export_bundle`."""
    from emomatch.bundle import export_bundle

    return export_bundle(run, out, archive=archive, store=store)


def train(
    config: str | Path | ExperimentConfig | Mapping[str, Any],
    out: str | Path | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    resume: bool = False,
) -> dict[str, Any]:
    """``emomatch train``: fit (selected on validation), then score the test split; returns
    the metrics written to ``out/metrics.json``. ``config`` is a YAML file, a dict or an
    :class:`~emomatch.config.ExperimentConfig`; ``overrides`` are ``key=value`` strings as for
    ``--set``; ``out`` defaults to ``runs/<config name>``."""
    from emomatch.config import (
        ExperimentConfig,
        config_from_dict,
        load_config,
        merge_dicts,
        parse_overrides,
    )
    from emomatch.runs import train_and_report

    if isinstance(config, ExperimentConfig):
        raw = config.model_dump(mode="json")
        cfg = config_from_dict(merge_dicts(raw, parse_overrides(list(overrides))), "config")
        name = "run"
    elif isinstance(config, Mapping):
        cfg = config_from_dict(
            merge_dicts(dict(config), parse_overrides(list(overrides))), "config"
        )
        name = "run"
    else:
        cfg = load_config(config, list(overrides))
        name = Path(config).stem
    run_dir = Path(out) if out is not None else Path("runs") / name
    return train_and_report(cfg, run_dir, resume=resume, seeds=seeds)


def evaluate(
    run: str | Path,
    split: str | None = None,
    store: str | Path | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """``emomatch evaluate``: a run's selected checkpoint (or seed ensemble) scored on a split
    (default its test split) of its store or of ``store``; returns the metrics, also written
    to ``out`` (default ``run/evaluation``)."""
    from emomatch.evaluation.predict import evaluate_run

    return evaluate_run(run, split, store, out)[0]


def __dir__() -> list[str]:
    # the public API only: not the names this module imports for its own use
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    # Classes resolved on first access: importing them loads torch.
    if name in ("Predictor", "Prediction"):
        import emomatch.bundle as bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'emomatch' has no attribute {name!r}")
