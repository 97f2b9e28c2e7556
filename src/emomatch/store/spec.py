"""The feature store's layout and metadata: file names, each modality's spec, ``store.json``.

See docs/feature_store.md for the layout as a whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emomatch.domain import MODALITIES
from emomatch.errors import StoreError

FORMAT_NAME = "emomatch-feature-store"
FORMAT_VERSION = 1
META_FILE = "store.json"
PARTS_DIR = "parts"
INDEX_FILE = "index.parquet"
BASE_COLUMNS = ("id", "speaker", "label")


@dataclass(frozen=True)
class ModalitySpec:
    """Shape and provenance of one modality's features.

    ``kind`` is ``vector`` (one row per utterance, e.g. openSMILE functionals) or ``sequence``
    (``max_len`` frames/words per utterance, zero-padded, with the valid length stored).
    ``dtype`` is how the features are stored: ``float32``, or ``float16`` for half the disk
    and page cache at paper scale (features are z-normalised later, so 3 significant digits
    carry what extractors give; readers always get float32).
    """

    kind: str
    dim: int
    max_len: int = 1
    extractor: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ("vector", "sequence"):
            raise StoreError(f"modality kind must be 'vector' or 'sequence', got {self.kind!r}")
        if self.dim < 1 or self.max_len < 1:
            raise StoreError(f"modality dims must be positive, got dim={self.dim}")
        if self.kind == "vector" and self.max_len != 1:
            raise StoreError("a vector modality has max_len 1")
        if self.dtype not in STORED_DTYPES:
            raise StoreError(
                f"modality dtype must be one of {', '.join(STORED_DTYPES)}, got {self.dtype!r}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.dim,) if self.kind == "vector" else (self.max_len, self.dim)

    def same_features(self, other: ModalitySpec) -> bool:
        return self.shape == other.shape and self.extractor == other.extractor

    def to_meta(self) -> dict[str, Any]:
        """The spec as store.json holds it; float32 stays implicit, so stores written before
        ``dtype`` existed keep comparing equal when a writer reopens them."""
        raw = asdict(self)
        if raw["dtype"] == "float32":
            del raw["dtype"]
        return raw


#: dtypes a store may hold features in
STORED_DTYPES = ("float32", "float16")


def length_column(modality: str) -> str:
    return f"{modality}_length"


REPAIR_HINT = (
    "run the same `emomatch extract` again (same manifest and --out): it drops the damaged "
    "part(s) and extracts their utterances again; a store written by `emomatch synth` or "
    "`emomatch balance-unlabeled` is written anew into another folder"
)
PART_NAME = re.compile(r"^part-(\d+)$")


class StoreDamagedError(StoreError):
    """Finished parts that cannot be read or that repeat utterances of earlier parts."""


class PartUnreadableError(StoreError):
    """A part that may be sound but could not be read now (permissions, I/O error)."""


def finished_parts(path: Path) -> list[Path]:
    """The store's finished parts in the order they were written (temporary ones excluded)."""
    parts_dir = path / PARTS_DIR
    if not parts_dir.is_dir():
        return []
    found = []
    for p in parts_dir.iterdir():
        match = PART_NAME.match(p.name)
        if match and p.is_dir():
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        parts = finished_parts(path)
        if parts:
            raise StoreError(
                f"{path}: {META_FILE} is missing, so the settings of its {len(parts)} part(s) are "
                "unknown and they cannot be read or added to; move the folder away and extract "
                "again into a new --out"
            )
        raise StoreError(f"{path} is not a feature store: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{meta_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise StoreError(f"{meta_path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{meta_path}: 'format' is {meta.get('format')!r}, not {FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: format_version {meta.get('format_version')} is not supported "
            f"(this emomatch reads {FORMAT_VERSION})"
        )
    for key, kind in (("classes", list), ("fields", list), ("modalities", dict)):
        if not isinstance(meta.get(key), kind):
            raise StoreError(f"{meta_path}: field {key!r} is missing or not a {kind.__name__}")
    return meta


def specs_from_meta(meta: Mapping[str, Any], where: Path) -> dict[str, ModalitySpec]:
    specs = {}
    for name, raw in meta.get("modalities", {}).items():
        if name not in MODALITIES:
            raise StoreError(f"{where}: unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        try:
            specs[name] = ModalitySpec(**raw)
        except TypeError as exc:
            raise StoreError(f"{where}: modality {name!r} is malformed ({exc})") from None
    if not specs:
        raise StoreError(f"{where}: the store declares no modality")
    return specs
