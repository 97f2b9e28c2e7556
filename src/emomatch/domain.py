"""The field's constants every stage shares, at the bottom of the import graph (no imports)."""

__version__ = "0.1.0"

#: the three modalities of the paper, in the order features, latents and reports list them
MODALITIES: tuple[str, ...] = ("acoustic", "visual", "lexical")

#: the matching measures emomatch ships (``loss.measure``), named here so that a config is
#: checked without importing torch; their code registers under these names in
#: :data:`emomatch.model.matching.MEASURES`, where a user's own measure can be added too
BUILTIN_MEASURES: tuple[str, ...] = ("pairwise", "batch")
