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


def _sklearn_reference(y: np.ndarray, p: np.ndarray, k: int) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    labels = list(range(k))
    present = sorted(set(y.tolist()))
    return {
        "macro_f1": f1_score(y, p, labels=labels, average="macro", zero_division=0),
        "weighted_f1": f1_score(y, p, labels=labels, average="weighted", zero_division=0),
        "wap": precision_score(y, p, labels=labels, average="weighted", zero_division=0),
        "ua": recall_score(y, p, labels=present, average="macro", zero_division=0),
        "wa": accuracy_score(y, p),
    }


def test_macro_f1_counts_every_class_of_the_label_set() -> None:
    # The case: class 2 is absent from the truth but predicted once, class 3 absent and
    # never predicted. Over the present classes only the mean would be (2/3 + 1) / 2.
    y = np.array([0, 0, 1])
    p = np.array([0, 2, 1])
    m = classification_metrics(y, p, 4)
    f1 = [2 / 3, 1.0, 0.0, 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["macro_f1"] != pytest.approx((2 / 3 + 1.0) / 2)
    # UA stays over the classes present: an absent class has no recall to average.
    assert m["ua"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("seed", range(12))
def test_every_metric_agrees_with_scikit_learn_with_absent_classes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 8))
    n = int(rng.integers(1, 40))
    # Truth drawn from a random subset of the classes, so some classes are usually absent;
    # predictions from all classes, so absent classes are sometimes predicted.
    truth_classes = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    y = rng.choice(truth_classes, size=n)
    p = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, size=n))
    got = classification_metrics(y, p, k)
    for key, value in _sklearn_reference(y, p, k).items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["support"] == np.bincount(y, minlength=k).tolist()
