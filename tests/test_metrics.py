import numpy as np
import pytest

from emomatch.metrics import classification_metrics


def test_metrics_against_hand_computed_values() -> None:
    # 3 classes; class 2 never predicted
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 1, 0])
    m = classification_metrics(y, p, 3)
    assert m["confusion"] == [[3, 1, 0], [1, 1, 0], [1, 1, 0]]
    recall = [3 / 4, 1 / 2, 0.0]
    precision = [3 / 5, 1 / 3, 0.0]
    support = [4, 2, 2]
    assert m["ua"] == pytest.approx(np.mean(recall))
    assert m["wa"] == pytest.approx(4 / 8)
    assert m["wap"] == pytest.approx(np.dot(precision, support) / 8)
    f1 = [2 * p_ * r / (p_ + r) if p_ + r else 0.0 for p_, r in zip(precision, recall, strict=True)]
    assert m["weighted_f1"] == pytest.approx(np.dot(f1, support) / 8)
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["confusion_normalized"][0] == pytest.approx([0.75, 0.25, 0.0])


def test_ua_ignores_classes_absent_from_the_truth() -> None:
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 2, 1]), 3)
    assert m["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["support"] == [2, 1, 0]
