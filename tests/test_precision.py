"""train.precision: the modes the trainer supports, a typo refused naming the key."""

import json

import numpy as np
import pandas as pd
import pytest

from emomatch.config import config_from_dict
from emomatch.errors import ConfigError
from emomatch.runs import train_and_report
from emomatch.training.fit import precision_for
from tests.support.builders import make_config


def _cfg(precision: str):
    return config_from_dict(
        {"data": {"store": "s"}, "train": {"precision": precision, "accelerator": "cpu"}}
    )


@pytest.mark.parametrize("mode", ["32-true", "16-mixed", "bf16-mixed"])
def test_known_modes_reach_the_trainer(mode: str) -> None:
    assert precision_for(_cfg(mode)) == mode


def test_auto_is_32_bit_without_a_gpu() -> None:
    assert precision_for(_cfg("auto")) == "32-true"


def test_a_typo_is_refused_naming_the_key_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"train\.precision.*'bf16-mixed'"):
        _cfg("bf16_mixed")


def test_bf16_mixed_training_on_cpu_learns(tiny_store, tmp_path) -> None:
    """bf16-mixed end to end on CPU (the option a user without a GPU can try): the losses stay
    finite and the model leaves chance. It did not while oneDNN's bf16 weight gradients of the
    visual decoder held NaN (tests/test_convmm.py)."""
    cfg = make_config(tiny_store, train={"max_epochs": 8, "precision": "bf16-mixed"})
    metrics = train_and_report(cfg, tmp_path / "run")
    assert metrics["ua"] > 0.6  # 4 classes: chance is 0.25
    # a NaN loss is logged as an empty cell: every epoch must have logged finite ones
    logs = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv")
    finite = logs[np.isfinite(logs["train/loss"])]
    assert sorted(finite["epoch"].unique()) == list(range(8))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["ua"] == metrics["ua"]
