"""train.precision: the modes the trainer supports, a typo refused naming the key."""

import pytest

from emomatch.config import config_from_dict
from emomatch.errors import ConfigError
from emomatch.training.fit import precision_for


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
