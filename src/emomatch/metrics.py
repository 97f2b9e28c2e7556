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
    """WAP = support-weighted precision; UA = mean per-class recall over the classes present in
    ``y_true``; WA = accuracy; weighted F1; macro F1 over all ``num_classes`` classes; confusion
    (rows: true, columns: predicted).

    The two means differ on purpose where a class is absent from the ground truth (a small
    validation speaker, a fold): such a class has no recall (0/0), so UA averages over the
    classes present, as the emotion-recognition literature does. Its F1 is well defined, 0 when
    the model predicts it anyway (every such prediction is a false positive), so macro F1 counts
    it, as scikit-learn's ``f1_score(average="macro", labels=range(K))`` does: a model that
    predicts a class nobody said is penalised instead of hidden. An absent class that is never
    predicted counts 0 too (scikit-learn's ``zero_division=0``), so on a split without some
    class macro F1 is at most (classes present) / K: compare it only on the same split.
    """
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
        y_true, y_pred, labels=labels, average="macro", zero_division=0
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
