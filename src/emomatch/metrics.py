"""The paper's metrics: WAP, UA, WA, weighted and macro F1, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

METRIC_KEYS = ("wap", "ua", "wa", "weighted_f1", "macro_f1")


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """WAP = support-weighted precision; UA = mean per-class recall (over classes present in
    ``y_true``); WA = accuracy; weighted/macro F1; confusion (rows: true, columns: predicted)."""
    labels = np.arange(num_classes)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(num_classes), where=support > 0)
    wap, _, wf1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    present = support > 0
    _, _, mf1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels[present], average="macro", zero_division=0
    )
    normalized = np.divide(
        cm, support[:, None], out=np.zeros(cm.shape, dtype=float), where=support[:, None] > 0
    )
    return {
        "wap": float(wap),
        "ua": float(recall[present].mean()) if present.any() else 0.0,
        "wa": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "weighted_f1": float(wf1),
        "macro_f1": float(mf1),
        "confusion": cm.tolist(),
        "confusion_normalized": normalized.round(6).tolist(),
        "support": support.tolist(),
        "n": int(len(y_true)),
    }


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std of each metric over runs (folds or seeds); confusion counts summed."""
    out: dict[str, Any] = {}
    for key in METRIC_KEYS:
        values = [r[key] for r in runs]
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values))
    out["confusion"] = np.sum([r["confusion"] for r in runs], axis=0).tolist()
    return out
