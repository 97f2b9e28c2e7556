"""The feature store: per-utterance acoustic vectors and visual/lexical sequences on disk.

Layout (see docs/feature_store.md): ``store.json`` metadata plus ``parts/part-NNNNN/`` folders,
each an Arrow/Parquet index table and one ``.npy`` array per modality, read with positional
reads of the rows a batch asks for (nothing is mapped or held in memory).
"""

from emomatch.store.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    FeatureStore,
    ModalitySpec,
    StoreWriter,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FeatureStore", "ModalitySpec", "StoreWriter"]
