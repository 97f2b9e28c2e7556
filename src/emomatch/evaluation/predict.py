"""Running a trained model over a split of a store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emomatch.data import EvalBatches, FeatureBatches, Split, check_finite, select_split
from emomatch.errors import DataError, EmomatchError
from emomatch.metrics import classification_metrics
from emomatch.model.ensemble import mean_probabilities
from emomatch.rundir import RunFolder
from emomatch.safeload import read_checkpoint
from emomatch.store import FeatureStore
from emomatch.training import EmoMatchModule

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> EmoMatchModule:
    path = Path(path)
    if not path.is_file():
        raise EmomatchError(f"checkpoint {path} does not exist")
    lead = f"{path} is not a readable emomatch checkpoint"
    saved = read_checkpoint(path, map_location=device, problem=lead)
    try:
        # built from the safely read dict: Lightning's load_from_checkpoint would unpickle the
        # file again, by default with weights_only=False
        module = EmoMatchModule(**saved["hyper_parameters"])
        module.load_state_dict(saved["state_dict"])
        module.to(device)
    except Exception as exc:  # a dict of other keys or shapes: "not a checkpoint" as well
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EmomatchError(
            f"{path} is not a readable emomatch checkpoint ({type(exc).__name__}: {detail}); "
            "give the run folder written by `emomatch train`"
        ) from None
    module.eval()
    return module


def predict_split(module: EmoMatchModule, split: Split, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n x K) of the split's rows, in order."""
    mods = list(module.shapes)
    batches = FeatureBatches(split, mods, with_labels=False)
    device = next(module.parameters()).device
    probs = []
    with torch.no_grad():
        for key in EvalBatches(len(split), batch_size):
            part = batches[key]["labeled"]
            inputs = {m: (x.to(device), n.to(device)) for m, (x, n) in part["inputs"].items()}
            probs.append(mean_probabilities([(module.model, module.normalizer)], inputs).cpu())
    return torch.cat(probs).numpy()


def check_same_features(module: EmoMatchModule, store: FeatureStore) -> None:
    """Refuse a store whose features were made otherwise than the model's training features
    (another extractor setting or version), naming the first differing setting. The training
    store is where the record is; when it has moved away the check cannot be made and is
    skipped with a warning."""
    from emomatch.store.provenance import check_provenance, store_provenance

    trained = Path(module.cfg.data.store)
    if store.path.resolve() == trained.resolve():
        return
    if not (trained / "store.json").is_file():
        log.warning(
            "the run's training store %s is gone: cannot check that %s holds features made "
            "the same way",
            trained,
            store.path,
        )
        return
    mods = list(module.shapes)
    expected = store_provenance(FeatureStore(trained), mods)
    check_provenance(expected, store_provenance(store, mods), where=f"store {store.path}")


def _model_store(module: EmoMatchModule, store: str | Path | None) -> FeatureStore:
    """The store a model is scored on (default: the one it trained on), opened and checked
    against the model once: features made the same way, shapes, classes."""
    store_obj = FeatureStore(store if store is not None else module.cfg.data.store)
    if store is not None:
        check_same_features(module, store_obj)
    for m in module.shapes:
        if m not in store_obj.modalities:
            raise DataError(f"store {store_obj.path} has no {m} features; the model needs them")
        have = store_obj.modalities[m].shape
        if tuple(have) != tuple(module.shapes[m]):
            raise DataError(
                f"store {store_obj.path}: {m} features have shape {list(have)}, but the model "
                f"was trained on {list(module.shapes[m])}"
            )
    if store_obj.classes != module.classes:
        raise DataError(
            f"store {store_obj.path} has classes {store_obj.classes}, the model {module.classes}"
        )
    return store_obj


def _split_probs(
    module: EmoMatchModule,
    store_obj: FeatureStore,
    split: str | Sequence[str] | None,
    split_field: str | None,
) -> tuple[Split, np.ndarray]:
    data_cfg = module.cfg.data
    mods = list(module.shapes)
    rows = select_split(
        store_obj,
        split_field or data_cfg.split_field,
        split or data_cfg.test_split,
        mods,
        labeled=True,
        missing=data_cfg.missing,
    )
    check_finite(rows, mods)
    return rows, predict_split(module, rows)


def _metrics(rows: Split, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    metrics = classification_metrics(rows.labels(), probs.argmax(1), len(classes))
    metrics["split"] = rows.name
    metrics["classes"] = list(classes)
    metrics["dropped_missing_modality"] = rows.dropped
    return metrics


def evaluate_checkpoints(
    checkpoints: Sequence[str | Path],
    splits: Sequence[str | Sequence[str] | None],
    store: str | Path | None = None,
    split_field: str | None = None,
) -> list[dict[str, Any]]:
    """Metrics on each labeled split (None: the run's test split) of the mean of the
    checkpoints' class probabilities: one checkpoint is scored alone, several (e.g. one per
    seed) as an ensemble, recorded as ``ensemble``: their count. Each checkpoint is loaded once
    for all splits; they must share classes and score the same rows."""
    if not checkpoints:
        raise EmomatchError("evaluation needs at least one checkpoint")
    rows: list[Split | None] = [None] * len(splits)
    sums: list[np.ndarray | None] = [None] * len(splits)
    classes: list[str] | None = None
    for path in checkpoints:
        module = load_checkpoint(path)
        if classes is not None and module.classes != classes:
            raise DataError(f"{path} has classes {module.classes}, {checkpoints[0]} {classes}")
        classes = module.classes
        store_obj = _model_store(module, store)
        for i, split in enumerate(splits):
            these, probs = _split_probs(module, store_obj, split, split_field)
            before, total = rows[i], sums[i]
            if before is not None and not np.array_equal(these.rows, before.rows):
                raise DataError(f"{path} does not score the same rows as {checkpoints[0]}")
            rows[i], sums[i] = these, probs if total is None else total + probs
    out = []
    for scored, total in zip(rows, sums, strict=True):
        assert scored is not None and total is not None and classes is not None
        metrics = _metrics(scored, total / len(checkpoints), classes)
        if len(checkpoints) > 1:
            metrics["ensemble"] = len(checkpoints)
        out.append(metrics)
    return out


def evaluate_checkpoint(
    checkpoint: str | Path,
    store: str | Path | None = None,
    split: str | Sequence[str] | None = None,
    split_field: str | None = None,
) -> dict[str, Any]:
    """Metrics of a checkpoint on one labeled split (default: the run's store and test split)."""
    return evaluate_checkpoints([checkpoint], [split], store, split_field)[0]


def evaluate_run(
    run: str | Path,
    split: str | None = None,
    store: str | Path | None = None,
    out: str | Path | None = None,
) -> tuple[dict[str, Any], Path]:
    """``emomatch evaluate``: a finished run (one checkpoint, or a seed ensemble) scored on a
    split of its store or of ``store`` (refused when made with other extractor settings);
    metrics.json and the confusion picture go to ``out`` (default ``run/evaluation``, and
    ``run/evaluation/SPLIT`` for a ``split`` named)."""
    from emomatch.evaluation.report import write_report

    folder = RunFolder(run)
    metrics = evaluate_checkpoints(folder.scoring_checkpoints(), [split], store=store)[0]
    # another split than the test split gets a folder of its own: never over the test report
    default = folder.evaluation_dir(split)
    path = write_report(Path(out) if out is not None else default, metrics)
    return metrics, path
