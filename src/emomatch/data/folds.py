"""Cross-validation folds of a store: its ``fold_k`` index fields (written by corpus readers)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from emomatch.errors import ConfigError
from emomatch.store import FeatureStore

FOLD_FIELD = re.compile(r"^fold_(\d+)$")


def store_folds(store: FeatureStore) -> list[int]:
    """Fold numbers k of the store's ``fold_k`` fields (written by corpus readers)."""
    found = [FOLD_FIELD.match(f) for f in store.fields]
    return sorted(int(m.group(1)) for m in found if m)


def choose_folds(store: FeatureStore, folds: Sequence[int] | None = None) -> list[int]:
    """The folds a cross-validated run uses: ``folds`` (each must exist), or every fold of the
    store when ``None``; a store without folds is a config error."""
    available = store_folds(store)
    if not available:
        raise ConfigError(
            f"store {store.path} has no fold_k field (fields: {store.fields}): --fold and "
            "--folds need a manifest with fold_k columns (emomatch prepare writes them); train "
            "without them on the store's split field"
        )
    chosen = list(folds) if folds is not None else available
    unknown = [k for k in chosen if k not in available]
    if unknown:
        raise ConfigError(f"store {store.path} has no fold(s) {unknown}; it has {available}")
    return chosen
