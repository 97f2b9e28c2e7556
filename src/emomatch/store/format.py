"""Reading and writing the on-disk feature store.

Why Parquet + .npy: the index (ids, speakers, split/fold fields, labels, lengths) is a small
table that pandas/Arrow users can open directly, and the feature arrays are plain ``.npy`` files
that ``numpy.load(mmap_mode="r")`` maps without reading them, so a paper-scale store never has to
fit in RAM. A store grows by whole *parts* that are written to a temporary folder and renamed
into place, so an interrupted writer never leaves the store unreadable and a resumed writer
knows which utterances are done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch import MODALITIES, __version__
from emomatch.errors import StoreError
from emomatch.files import atomic_write_text

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
    """

    kind: str
    dim: int
    max_len: int = 1
    extractor: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("vector", "sequence"):
            raise StoreError(f"modality kind must be 'vector' or 'sequence', got {self.kind!r}")
        if self.dim < 1 or self.max_len < 1:
            raise StoreError(f"modality dims must be positive, got dim={self.dim}")
        if self.kind == "vector" and self.max_len != 1:
            raise StoreError("a vector modality has max_len 1")

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.dim,) if self.kind == "vector" else (self.max_len, self.dim)

    def same_features(self, other: ModalitySpec) -> bool:
        return self.shape == other.shape and self.extractor == other.extractor


def _length_column(modality: str) -> str:
    return f"{modality}_length"


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise StoreError(f"{path} is not a feature store: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{meta_path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{meta_path}: 'format' is {meta.get('format')!r}, not {FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{meta_path}: format_version {meta.get('format_version')} is not supported "
            f"(this emomatch reads {FORMAT_VERSION})"
        )
    return meta


def _specs_from_meta(meta: Mapping[str, Any], where: Path) -> dict[str, ModalitySpec]:
    specs = {}
    for name, raw in meta.get("modalities", {}).items():
        if name not in MODALITIES:
            raise StoreError(f"{where}: unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        specs[name] = ModalitySpec(**raw)
    if not specs:
        raise StoreError(f"{where}: the store declares no modality")
    return specs


class StoreWriter:
    """Creates a store (or reopens a compatible one) and appends parts atomically."""

    def __init__(
        self,
        path: str | Path,
        classes: Sequence[str],
        modalities: Mapping[str, ModalitySpec],
        fields: Sequence[str] = ("split",),
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.classes = list(classes)
        self.modalities = dict(modalities)
        self.fields = list(fields)
        for name in self.modalities:
            if name not in MODALITIES:
                raise StoreError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "emomatch_version": __version__,
            "classes": self.classes,
            "fields": self.fields,
            "modalities": {k: asdict(v) for k, v in self.modalities.items()},
            "info": dict(info or {}),
        }
        (self.path / PARTS_DIR).mkdir(parents=True, exist_ok=True)
        if (self.path / META_FILE).exists():
            old = _read_meta(self.path)
            for key in ("classes", "fields", "modalities"):
                if old[key] != meta[key]:
                    raise StoreError(
                        f"{self.path} was written with other {key} ({old[key]!r}); "
                        f"refusing to mix in {meta[key]!r}"
                    )
        else:
            atomic_write_text(self.path / META_FILE, json.dumps(meta, indent=2))
        # A temporary part left by a crash holds nothing finished: drop it.
        for leftover in (self.path / PARTS_DIR).glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def done_ids(self) -> set[str]:
        """Ids already in finished parts, so a resumed writer skips them."""
        done: set[str] = set()
        for part in sorted((self.path / PARTS_DIR).glob("part-*")):
            done.update(pd.read_parquet(part / INDEX_FILE, columns=["id"])["id"].tolist())
        return done

    def write_part(self, index: pd.DataFrame, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write one part; ``index`` has id, speaker, label, the fields, ``<modality>_length``."""
        n = len(index)
        missing = [c for c in (*BASE_COLUMNS, *self.fields) if c not in index.columns]
        if missing:
            raise StoreError(f"part index lacks column(s) {missing}")
        if index["id"].duplicated().any():
            dup = index.loc[index["id"].duplicated(), "id"].iloc[0]
            raise StoreError(f"duplicate utterance id {dup!r} in one part")
        bad_labels = set(index["label"].dropna()) - set(self.classes)
        if bad_labels:
            raise StoreError(f"labels {sorted(bad_labels)} are not among classes {self.classes}")
        table = index[[*BASE_COLUMNS, *self.fields]].copy()
        table["id"] = table["id"].astype(str)
        table["speaker"] = table["speaker"].astype(str)
        for f in self.fields:
            table[f] = table[f].astype(str)
        for name, spec in self.modalities.items():
            if name not in arrays:
                raise StoreError(f"part lacks the {name} array")
            arr = arrays[name]
            if arr.shape != (n, *spec.shape):
                raise StoreError(f"{name} array has shape {arr.shape}, expected {(n, *spec.shape)}")
            col = _length_column(name)
            if col not in index.columns:
                raise StoreError(f"part index lacks column {col!r}")
            lengths = index[col].to_numpy().astype(np.int32)
            if (lengths < 0).any() or (lengths > spec.max_len).any():
                raise StoreError(f"{col} must lie in [0, {spec.max_len}]")
            table[col] = lengths
        parts = self.path / PARTS_DIR
        existing = [int(p.name.split("-")[1]) for p in parts.glob("part-*")]
        final = parts / f"part-{(max(existing) + 1 if existing else 0):05d}"
        tmp = Path(tempfile.mkdtemp(dir=parts, prefix=".tmp-"))
        table.to_parquet(tmp / INDEX_FILE, index=False)
        for name in self.modalities:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name], dtype=np.float32))
        os.replace(tmp, final)
        return final


class FeatureStore:
    """Read side of the store: the index in memory, features memory-mapped per part."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_meta(self.path)
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.fields: list[str] = list(meta["fields"])
        self.modalities = _specs_from_meta(meta, self.path / META_FILE)
        parts = sorted((self.path / PARTS_DIR).glob("part-*"))
        if not parts:
            raise StoreError(f"{self.path} holds no finished part (nothing was extracted yet)")
        self._parts = parts
        frames = []
        for k, part in enumerate(parts):
            frame = pd.read_parquet(part / INDEX_FILE)
            frame["_part"] = k
            frame["_row"] = np.arange(len(frame))
            frames.append(frame)
        self._part_sizes = [len(f) for f in frames]
        self._arrays: list[dict[str, np.ndarray]] | None = None
        self._open_arrays()
        self.index = pd.concat(frames, ignore_index=True)
        if self.index["id"].duplicated().any():
            dup = self.index.loc[self.index["id"].duplicated(), "id"].iloc[0]
            raise StoreError(f"{self.path}: utterance id {dup!r} appears in two parts")

    def _open_arrays(self) -> list[dict[str, np.ndarray]]:
        if self._arrays is None:
            opened = []
            for part, size in zip(self._parts, self._part_sizes, strict=True):
                arrays = {}
                for name, spec in self.modalities.items():
                    arr = np.load(part / f"{name}.npy", mmap_mode="r")
                    if arr.shape != (size, *spec.shape):
                        raise StoreError(
                            f"{part / (name + '.npy')} has shape {arr.shape}, "
                            f"expected {(size, *spec.shape)}"
                        )
                    arrays[name] = arr
                opened.append(arrays)
            self._arrays = opened
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as their whole contents; worker processes reopen them.
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.index)

    def select(self, field: str, value: str) -> np.ndarray:
        """Row positions whose ``field`` equals ``value`` (e.g. split == 'train')."""
        if field not in self.index.columns:
            raise StoreError(
                f"{self.path}: no field {field!r}; fields: {', '.join(self.fields) or 'none'}"
            )
        return np.flatnonzero(self.index[field].astype(str).to_numpy() == value)

    def present(self, modality: str, rows: np.ndarray) -> np.ndarray:
        """Boolean mask: which rows have this modality (length > 0)."""
        return self.index[_length_column(modality)].to_numpy()[rows] > 0

    def lengths(self, modality: str, rows: np.ndarray) -> np.ndarray:
        return self.index[_length_column(modality)].to_numpy()[rows].astype(np.int64)

    def labels(self, rows: np.ndarray) -> np.ndarray:
        """Class indices of the rows, -1 where unlabeled."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        raw = self.index["label"].to_numpy()[rows]
        return np.array([lookup.get(x, -1) if isinstance(x, str) else -1 for x in raw], np.int64)

    def ids(self, rows: np.ndarray) -> list[str]:
        return self.index["id"].to_numpy()[rows].tolist()

    def fetch(self, modality: str, rows: np.ndarray) -> np.ndarray:
        """Features of the given rows (a fresh float32 array, in the order asked)."""
        spec = self.modalities[modality]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *spec.shape), dtype=np.float32)
        parts = self.index["_part"].to_numpy()[rows]
        local = self.index["_row"].to_numpy()[rows]
        arrays = self._open_arrays()
        for k in np.unique(parts):
            sel = np.flatnonzero(parts == k)
            order = np.argsort(local[sel], kind="stable")
            # Sorted reads keep memory-mapped access sequential.
            out[sel[order]] = arrays[k][modality][local[sel][order]]
        return out

    def iter_chunks(
        self, modality: str, rows: np.ndarray, chunk: int = 2048
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row positions, features) in chunks, for passes over a whole split."""
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            yield sel, self.fetch(modality, sel)
