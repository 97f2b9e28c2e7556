"""The store's parts: their ``.npy`` arrays read by positional reads, and a scan that tells
sound parts from damaged ones."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.errors import StoreError
from emomatch.store.spec import (
    BASE_COLUMNS,
    INDEX_FILE,
    REPAIR_HINT,
    ModalitySpec,
    PartUnreadableError,
    finished_parts,
    length_column,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArrayFile:
    """Where one part's feature array lies in its ``.npy`` file: rows are C-ordered and
    contiguous after the header, so row ``r`` starts at ``offset + r * row_bytes``."""

    path: Path
    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` (sorted ascending) in that order, one positional read per run of
        consecutive rows."""
        out = np.empty((len(local), *self.row_shape), dtype=self.dtype)
        if len(local) == 0:
            return out
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(local)]])
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                want = (b - a) * self.row_bytes
                got = os.preadv(fd, [out[a:b].data.cast("B")], self._at(int(local[a])))
                if got != want:
                    raise StoreError(
                        f"{self.path}: rows {int(local[a])}..{int(local[b - 1])} end past the "
                        f"end of the file ({got} of {want} bytes), probably truncated"
                    )
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        return out

    def _at(self, row: int) -> int:
        return self.offset + row * self.row_bytes


def open_array(file: Path) -> ArrayFile:
    """Parse a ``.npy`` header and check that the file holds all its rows. Raises
    FileNotFoundError, OSError (I/O) or StoreError (not an array, truncated)."""
    with open(file, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        except ValueError as exc:
            raise StoreError(
                f"{file.name} is not a .npy array, probably truncated ({exc})"
            ) from None
        offset = fh.tell()
        size = os.fstat(fh.fileno()).st_size
    if fortran or dtype.hasobject or not shape:
        raise StoreError(f"{file.name}: expected a C-ordered numeric array, got {dtype} {shape}")
    array = ArrayFile(Path(file), int(shape[0]), tuple(int(s) for s in shape[1:]), dtype, offset)
    if size < offset + array.rows * array.row_bytes:
        raise StoreError(
            f"{file.name} cannot be read, probably truncated ({size} bytes for "
            f"{array.rows} rows of {array.row_bytes} after a {offset}-byte header)"
        )
    return array


@dataclass
class ScannedPart:
    path: Path
    index: pd.DataFrame
    arrays: dict[str, ArrayFile]


def scan_part(
    part: Path, modalities: Mapping[str, ModalitySpec], fields: Sequence[str]
) -> ScannedPart:
    """Open one finished part (index read, array headers checked). A damaged part raises
    StoreError saying what is wrong; a read that fails for another reason (permissions, an I/O
    error) raises :class:`PartUnreadableError`, so that a writer never drops a sound part it
    merely could not read."""
    try:
        index = pd.read_parquet(part / INDEX_FILE)
    except FileNotFoundError:
        raise StoreError(f"{INDEX_FILE} is missing") from None
    except OSError as exc:
        raise PartUnreadableError(
            f"cannot read {part / INDEX_FILE}: {exc.strerror or exc}"
        ) from None
    except Exception as exc:  # pyarrow's ArrowInvalid & co. for a truncated or foreign file
        raise StoreError(f"{INDEX_FILE} cannot be read ({type(exc).__name__}: {exc})") from None
    need = [*BASE_COLUMNS, *fields, *(length_column(m) for m in modalities)]
    missing = [c for c in need if c not in index.columns]
    if missing:
        raise StoreError(f"{INDEX_FILE} lacks column(s) {missing}")
    if index["id"].duplicated().any():
        raise StoreError(f"utterance id {index['id'][index['id'].duplicated()].iloc[0]!r} twice")
    arrays = {}
    for name, spec in modalities.items():
        file = part / f"{name}.npy"
        try:
            arr = open_array(file)
        except FileNotFoundError:
            raise StoreError(f"{file.name} is missing") from None
        except OSError as exc:
            raise PartUnreadableError(f"cannot read {file}: {exc.strerror or exc}") from None
        if (arr.rows, *arr.row_shape) != (len(index), *spec.shape) or arr.dtype != spec.dtype:
            raise StoreError(
                f"{file.name} has shape {(arr.rows, *arr.row_shape)} {arr.dtype}, expected "
                f"{(len(index), *spec.shape)} {spec.dtype}"
            )
        arrays[name] = arr
    return ScannedPart(part, index, arrays)


def scan_parts(
    path: Path, modalities: Mapping[str, ModalitySpec], fields: Sequence[str]
) -> tuple[list[ScannedPart], list[tuple[Path, str]]]:
    """The readable finished parts, and the damaged ones with the reason.

    A part that repeats an utterance id of an earlier readable part is damaged (only two
    unlocked writers racing on one store, before emomatch locked stores, could make one).
    """
    good: list[ScannedPart] = []
    bad: list[tuple[Path, str]] = []
    owner: dict[str, str] = {}
    for part in finished_parts(path):
        try:
            scanned = scan_part(part, modalities, fields)
        except PartUnreadableError:
            raise
        except StoreError as exc:
            bad.append((part, str(exc)))
            continue
        ids = scanned.index["id"].astype(str).tolist()
        repeated = next((i for i in ids if i in owner), None)
        if repeated is not None:
            bad.append((part, f"utterance id {repeated!r} is also in {owner[repeated]}"))
            continue
        owner.update(dict.fromkeys(ids, part.name))
        good.append(scanned)
    return good, bad


def damage_report(path: Path, bad: Sequence[tuple[Path, str]]) -> str:
    shown = "; ".join(f"{p.name}: {reason}" for p, reason in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return (
        f"{path} is damaged: {len(bad)} part(s) cannot be used: {shown}{more}. "
        f"To repair: {REPAIR_HINT}"
    )
