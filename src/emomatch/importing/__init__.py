"""``emomatch import``: a feature store from arrays a user already has (the stage beside the
extractors: it reads a manifest and writes a store, as extraction does)."""

from emomatch.importing.features import (
    IMPORTED,
    ImportSummary,
    SplitRule,
    import_features,
    parse_split_rule,
)

__all__ = ["IMPORTED", "ImportSummary", "SplitRule", "import_features", "parse_split_rule"]
