"""Reading a store: its index and the features of any rows, fetched part by part."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from emomatch.errors import StoreError
from emomatch.store.parts import ArrayFile, damage_report, scan_parts
from emomatch.store.spec import (
    META_FILE,
    StoreDamagedError,
    length_column,
    read_meta,
    specs_from_meta,
)

log = logging.getLogger(__name__)


class FeatureStore:
    """Read side of the store: the index in memory, features read per batch from each part's
    files (positional reads of the rows asked, nothing kept resident)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.fields: list[str] = list(meta["fields"])
        self.modalities = specs_from_meta(meta, self.path / META_FILE)
        good, bad = scan_parts(self.path, self.modalities, self.fields)
        if bad:
            raise StoreDamagedError(damage_report(self.path, bad))
        if not good:
            raise StoreError(
                f"{self.path} holds no finished part (nothing was extracted yet; an interrupted "
                "`emomatch extract` continues when run again)"
            )
        self._parts = [p.path for p in good]
        frames = []
        for k, part in enumerate(good):
            frame = part.index
            frame["_part"] = k
            frame["_row"] = np.arange(len(frame))
            frames.append(frame)
        # Only where each array's rows start: no file stays open, so the store pickles small
        # into DataLoader workers and a store of thousands of parts needs no descriptor each.
        self._arrays: list[dict[str, ArrayFile]] = [p.arrays for p in good]
        self.index = pd.concat(frames, ignore_index=True)

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
        return self.index[length_column(modality)].to_numpy()[rows] > 0

    def lengths(self, modality: str, rows: np.ndarray) -> np.ndarray:
        return self.index[length_column(modality)].to_numpy()[rows].astype(np.int64)

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
        for k in np.unique(parts):
            sel = np.flatnonzero(parts == k)
            order = np.argsort(local[sel], kind="stable")
            # Sorted reads go forward through the file and merge consecutive rows into one read.
            out[sel[order]] = self._arrays[k][modality].read(local[sel][order])
        return out

    def chunk_rows(self, modality: str, budget_bytes: int = 32 * 2**20) -> int:
        """Rows per chunk so that one chunk's float32 features take about ``budget_bytes``
        (a fixed row count was 180 MB per chunk of 22 x 1024 word sequences, several times that
        in the float64 passes over it)."""
        row = int(np.prod(self.modalities[modality].shape)) * 4
        return max(1, budget_bytes // row)

    def iter_chunks(
        self, modality: str, rows: np.ndarray, chunk: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row positions, features) in chunks, for passes over a whole split; ``chunk``
        rows each (default: :meth:`chunk_rows`)."""
        chunk = chunk or self.chunk_rows(modality)
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            yield sel, self.fetch(modality, sel)
