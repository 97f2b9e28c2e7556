"""The feature store: per-utterance acoustic vectors and visual/lexical sequences on disk.

Layout (see docs/feature_store.md): ``store.json`` metadata plus ``parts/part-NNNNN/`` folders,
each an Arrow/Parquet index table and one ``.npy`` array per modality, read with positional
reads of the rows a batch asks for (nothing is mapped or held in memory). ``spec`` names the
layout and the metadata, ``parts`` reads one part, ``writer`` and ``reader`` a whole store.
"""

from emomatch.store.reader import FeatureStore
from emomatch.store.spec import FORMAT_NAME, FORMAT_VERSION, ModalitySpec
from emomatch.store.writer import StoreWriter

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FeatureStore", "ModalitySpec", "StoreWriter"]
