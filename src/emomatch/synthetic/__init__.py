"""Synthetic feature-level corpora for tests and the demo."""

from emomatch.synthetic.features import PAPER_SHAPES, SyntheticCorpus, write_synthetic_store

__all__ = ["PAPER_SHAPES", "SyntheticCorpus", "write_synthetic_store"]
