"""Model bundles: export a trained run, load it anywhere, predict emotions of new recordings."""

from emomatch.bundle.format import (
    BUNDLE_FORMAT,
    Bundle,
    BundleError,
    bundle_listing,
    export_bundle,
    read_bundle,
    write_archive,
)
from emomatch.bundle.postprocess import Prediction
from emomatch.bundle.predictor import Predictor, load, media_duration

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "BundleError",
    "Prediction",
    "Predictor",
    "bundle_listing",
    "export_bundle",
    "load",
    "media_duration",
    "read_bundle",
    "write_archive",
]
