"""Corpus readers: each turns a corpus as released into the one corpus-agnostic manifest."""

from emomatch.corpora.base import CORPORA, PreparedCorpus
from emomatch.corpora.manifest import (
    MANIFEST_COLUMNS,
    ManifestProblem,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from emomatch.corpora.prepare import prepare_corpus

__all__ = [
    "CORPORA",
    "PreparedCorpus",
    "prepare_corpus",
    "MANIFEST_COLUMNS",
    "ManifestProblem",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
]
