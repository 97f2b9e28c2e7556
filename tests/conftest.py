"""Shared fixtures: tiny synthetic feature stores and configs that train in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from emomatch.synthetic import write_synthetic_store
from tests.support.builders import TINY_MODEL, TINY_SHAPES, make_config, tiny_corpus

# re-exported for tests that import them from here
__all__ = ["TINY_MODEL", "TINY_SHAPES", "make_config", "tiny_corpus"]

# Property-based tests (tests/test_properties_*.py): a few dozen examples each in `make test`;
# HYPOTHESIS_PROFILE=long runs thousands (see docs/reliability.md). No deadline: the machine
# running the suite may be busy, and a slow example is not a failure.
for _name, _examples in (("quick", 40), ("long", 2000)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stores") / "tiny"
    write_synthetic_store(tiny_corpus(), path)
    return path
