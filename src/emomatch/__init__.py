"""emomatch: semi-supervised multimodal emotion recognition, cross-modal distribution matching."""

__version__ = "0.1.0"

MODALITIES: tuple[str, ...] = ("acoustic", "visual", "lexical")
