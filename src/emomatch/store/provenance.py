"""Feature provenance as a store records it: which extractor settings made a modality's
features, and whether two sets of features were made the same way.

A model only means something on features made exactly as its training features were: a store
extracted with ``lexical.pooling=first`` scores a model trained on ``mean`` as if it were
another model. Every place that feeds a model features it did not train on (``evaluate
--store``, ``predict``, a second store in training) compares the recorded settings first and
refuses with one message naming the setting that differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from emomatch.errors import DataError
from emomatch.store.reader import FeatureStore

#: how a modality's features were made, as stored: {kind, dim, max_len, extractor: {...}}
Provenance = dict[str, dict[str, Any]]


def store_provenance(store: FeatureStore, modalities: Sequence[str]) -> Provenance:
    """The recorded shape and extractor settings of ``modalities`` in ``store``."""
    missing = [m for m in modalities if m not in store.modalities]
    if missing:
        have = ", ".join(store.modalities)
        raise DataError(f"store {store.path} has no {', '.join(missing)} features (it has: {have})")
    return {m: asdict(store.modalities[m]) for m in modalities}


def _shown(value: Any) -> str:
    return "(not recorded)" if value is _ABSENT else repr(value)


_ABSENT = object()


def first_difference(
    expected: Mapping[str, Mapping[str, Any]],
    found: Mapping[str, Mapping[str, Any]],
    found_name: str = "store",
    expected_name: str = "model was trained on",
) -> str | None:
    """``"lexical.pooling: store has 'first', model was trained on 'mean'"`` for the first
    setting (or shape) in which ``found`` differs from ``expected``; None when they agree on
    every modality of ``expected``."""
    for m, want in expected.items():
        have = found.get(m)
        if have is None:
            return f"{m}: {found_name} has no {m} features, {expected_name} them"
        for key in ("kind", "max_len", "dim"):
            if have.get(key) != want.get(key):
                return (
                    f"{m}.{key}: {found_name} has {have.get(key)!r}, "
                    f"{expected_name} {want.get(key)!r}"
                )
        want_x, have_x = dict(want.get("extractor", {})), dict(have.get("extractor", {}))
        # the extractor's name first: every other setting differs when the extractor does
        for key in ["name", *sorted((set(want_x) | set(have_x)) - {"name"})]:
            a, b = have_x.get(key, _ABSENT), want_x.get(key, _ABSENT)
            if a != b:
                return f"{m}.{key}: {found_name} has {_shown(a)}, {expected_name} {_shown(b)}"
    return None


def check_provenance(
    expected: Mapping[str, Mapping[str, Any]],
    found: Mapping[str, Mapping[str, Any]],
    found_name: str = "store",
    expected_name: str = "model was trained on",
    where: str = "",
    advice: str = "extract them again with the model's settings",
    lead: str = "features made differently from the model's",
) -> None:
    """Raise :class:`DataError` naming the first differing setting (see
    :func:`first_difference`)."""
    problem = first_difference(expected, found, found_name, expected_name)
    if problem is not None:
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}{lead}: {problem} ({advice})")
