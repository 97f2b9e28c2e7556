"""Reading and writing the on-disk feature store.

Why Parquet + .npy: the index (ids, speakers, split/fold fields, labels, lengths) is a small
table that pandas/Arrow users can open directly, and the feature arrays are plain ``.npy`` files
whose rows a reader fetches with positional reads (``os.preadv``) at the offset the ``.npy``
header gives, so a paper-scale store never has to fit in RAM, and reading a whole epoch does not
grow the reader's resident memory either (pages of a memory map count in it and stay there).
Features are float32, or float16 where a modality's ``dtype`` says so (half the disk and page
cache; values are returned as float32). A store grows by whole *parts* that are written to a
temporary folder and renamed into place, so an interrupted writer never leaves the store
unreadable and a resumed writer knows which utterances are done.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch import MODALITIES, __version__
from emomatch.errors import LockedError, StoreError, WriteError
from emomatch.files import (
    LOCK_FILE,
    atomic_write_text,
    default_file_mode,
    describe_os_error,
    fsync_dir,
    hold_lock,
)

FORMAT_NAME = "emomatch-feature-store"
FORMAT_VERSION = 1
META_FILE = "store.json"
PARTS_DIR = "parts"
INDEX_FILE = "index.parquet"
BASE_COLUMNS = ("id", "speaker", "label")

log = logging.getLogger(__name__)


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


def _length_column(modality: str) -> str:
    return f"{modality}_length"


REPAIR_HINT = (
    "run the same `emomatch extract` again (same manifest and --out): it drops the damaged "
    "part(s) and extracts their utterances again; a store written by `emomatch synth` or "
    "`emomatch balance-unlabeled` is written anew into another folder"
)
_PART_NAME = re.compile(r"^part-(\d+)$")


class StoreDamagedError(StoreError):
    """Finished parts that cannot be read or that repeat utterances of earlier parts."""


class PartUnreadableError(StoreError):
    """A part that may be sound but could not be read now (permissions, I/O error)."""


def _finished_parts(path: Path) -> list[Path]:
    """The store's finished parts in the order they were written (temporary ones excluded)."""
    parts_dir = path / PARTS_DIR
    if not parts_dir.is_dir():
        return []
    found = []
    for p in parts_dir.iterdir():
        match = _PART_NAME.match(p.name)
        if match and p.is_dir():
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        parts = _finished_parts(path)
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


def _specs_from_meta(meta: Mapping[str, Any], where: Path) -> dict[str, ModalitySpec]:
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


def _scan_part(
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
    need = [*BASE_COLUMNS, *fields, *(_length_column(m) for m in modalities)]
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
    for part in _finished_parts(path):
        try:
            scanned = _scan_part(part, modalities, fields)
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


def _damage_report(path: Path, bad: Sequence[tuple[Path, str]]) -> str:
    shown = "; ".join(f"{p.name}: {reason}" for p, reason in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return (
        f"{path} is damaged: {len(bad)} part(s) cannot be used: {shown}{more}. "
        f"To repair: {REPAIR_HINT}"
    )


class StoreWriter:
    """Creates a store (or reopens a compatible one) and appends parts atomically.

    The writer holds the store's lock (:func:`emomatch.files.hold_lock`) from construction until
    :meth:`close` (or the end of a ``with`` block, or the process): a second writer of the same
    store, in any process, gets :class:`~emomatch.errors.LockedError`. Opening an existing store
    drops what an interruption can leave (temporary parts) and what is damaged (unreadable parts,
    parts repeating ids), so that the utterances of those are extracted again; ``dropped`` lists
    them.
    """

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
        self.dropped: list[tuple[str, str]] = []
        for name in self.modalities:
            if name not in MODALITIES:
                raise StoreError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        if not self.modalities:
            raise StoreError("a store needs at least one modality")
        if len(set(self.classes)) != len(self.classes):
            raise StoreError(f"class names repeat: {self.classes}")
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "emomatch_version": __version__,
            "classes": self.classes,
            "fields": self.fields,
            "modalities": {k: v.to_meta() for k, v in self.modalities.items()},
            "info": dict(info or {}),
        }
        self._lock = ExitStack()
        # The lock comes first: everything below (the settings check, the clean-up of temporary
        # parts) must not race with another writer.
        self._lock.enter_context(hold_lock(self.path, "store"))
        try:
            self._open(meta)
        except BaseException:
            self._lock.close()
            raise

    def _open(self, meta: dict[str, Any]) -> None:
        parts = self.path / PARTS_DIR
        try:
            if (self.path / META_FILE).exists():
                old = _read_meta(self.path)
                for key in ("classes", "fields", "modalities"):
                    if old[key] != meta[key]:
                        raise StoreError(
                            f"{self.path} was written with other {key} ({old[key]!r}); "
                            f"refusing to mix in {meta[key]!r}"
                        )
            elif _finished_parts(self.path):
                _read_meta(self.path)  # raises: parts of unknown settings are not added to
            else:
                # store.json before parts/: a folder with parts always says what they hold.
                atomic_write_text(self.path / META_FILE, json.dumps(meta, indent=2))
            parts.mkdir(exist_ok=True)
            # A temporary part left by a crash holds nothing finished; no other writer can be
            # filling it, since this one holds the lock.
            for leftover in parts.glob(".tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            good, bad = scan_parts(self.path, self.modalities, self.fields)
            for part, reason in bad:
                log.warning(
                    "%s: dropping damaged %s (%s); its utterances are extracted again",
                    self.path,
                    part.name,
                    reason,
                )
                shutil.rmtree(part)
                self.dropped.append((part.name, reason))
            if bad:
                fsync_dir(parts)
        except OSError as exc:
            raise WriteError(
                f"cannot write the store {self.path}: {describe_os_error(exc)}"
            ) from None
        self._done = {str(i) for p in good for i in p.index["id"]}
        numbers = [int(p.path.name.split("-")[1]) for p in good]
        numbers += [int(name.split("-")[1]) for name, _ in self.dropped]
        self._next = max(numbers) + 1 if numbers else 0

    def close(self) -> None:
        """Release the store's lock (idempotent)."""
        self._lock.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        lock = self.__dict__.get("_lock")
        if lock is not None:
            lock.close()

    def done_ids(self) -> set[str]:
        """Ids already in finished parts, so a resumed writer skips them."""
        return set(self._done)

    def write_part(self, index: pd.DataFrame, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write one part; ``index`` has id, speaker, label, the fields, ``<modality>_length``.

        The part appears whole or not at all: its files are written and flushed to disk in a
        temporary folder that is then renamed. A write that fails (disk full, folder gone
        read-only) raises :class:`~emomatch.errors.WriteError` and leaves the store as it was.
        """
        n = len(index)
        missing = [c for c in (*BASE_COLUMNS, *self.fields) if c not in index.columns]
        if missing:
            raise StoreError(f"part index lacks column(s) {missing}")
        if index["id"].duplicated().any():
            dup = index.loc[index["id"].duplicated(), "id"].iloc[0]
            raise StoreError(f"duplicate utterance id {dup!r} in one part")
        again = set(index["id"].astype(str)) & self._done
        if again:
            raise StoreError(f"utterance id {sorted(again)[0]!r} is already in {self.path}")
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
        final = parts / f"part-{self._next:05d}"
        tmp: Path | None = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=parts, prefix=".tmp-"))
            table.to_parquet(tmp / INDEX_FILE, index=False)
            _fsync_file(tmp / INDEX_FILE)
            for name, spec in self.modalities.items():
                with open(tmp / f"{name}.npy", "wb") as fh:
                    np.save(fh, _stored(name, arrays[name], spec))
                    fh.flush()
                    os.fsync(fh.fileno())
            # mkdtemp makes the folder private (0700); a store is meant to be shared.
            os.chmod(tmp, 0o777 & ~_umask_bits())
            fsync_dir(tmp)
            os.rename(tmp, final)
            tmp = None
            fsync_dir(parts)
        except OSError as exc:
            raise WriteError(
                f"cannot write a part of the store {self.path}: {describe_os_error(exc)}; "
                "the parts already written are kept and a rerun continues from them"
            ) from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self._next += 1
        self._done.update(table["id"])
        return final


def _stored(name: str, values: np.ndarray, spec: ModalitySpec) -> np.ndarray:
    """The array as the store holds it; a value float16 cannot hold is refused, not made inf."""
    stored = np.ascontiguousarray(values, dtype=spec.dtype)
    if spec.dtype != "float32" and not np.isfinite(stored).all():
        source = np.asarray(values)
        overflow = np.isfinite(source) & ~np.isfinite(stored)
        if overflow.any():
            worst = float(np.abs(source[overflow]).max())
            raise StoreError(
                f"{name} features hold {worst:g}, beyond the range of {spec.dtype} "
                f"(max {float(np.finfo(spec.dtype).max):g}); store {name} as float32"
            )
    return stored


def _umask_bits() -> int:
    return 0o666 & ~default_file_mode()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned(path: Path) -> None:
    """Temporary folders of earlier writers of ``path`` that were killed: a folder whose lock
    is free has no writer left (a live writer holds its lock until the rename)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        if not (tmp / LOCK_FILE).exists():
            continue  # a writer between creating the folder and locking it
        try:
            with hold_lock(tmp, "store"):
                shutil.rmtree(tmp, ignore_errors=True)
        except (LockedError, WriteError):
            continue


@contextmanager
def new_store_folder(path: str | Path) -> Iterator[Path]:
    """For writers of a whole new store (synth, balance-unlabeled): yield a hidden temporary
    folder next to ``path`` to write the store into; when the block succeeds it is renamed to
    ``path`` in one step, so ``path`` never holds half a store. ``path`` must not exist or be an
    empty folder: an existing store is never overwritten or mixed into."""
    path = Path(path)

    def refuse() -> StoreError:
        if (path / META_FILE).exists() or _finished_parts(path):
            return StoreError(
                f"{path} already holds a feature store; write the new one into another folder "
                "(or delete this one first)"
            )
        return StoreError(f"{path} exists and is not an empty folder; choose another folder")

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise refuse()
    _remove_abandoned(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    except OSError as exc:
        raise WriteError(f"cannot create the store {path}: {describe_os_error(exc)}") from None
    try:
        try:
            yield tmp
        except WriteError as exc:
            # The part writer's message promises that finished parts are kept for a rerun;
            # here they lie in the temporary folder removed below: say what really happens.
            said = str(exc).replace(str(tmp), str(path)).split("; the parts already written")[0]
            raise WriteError(
                f"{said}; nothing of {path} is kept (a new store is written whole or not at "
                "all): run the command again"
            ) from None
        os.chmod(tmp, 0o777 & ~_umask_bits())
        try:
            # rename(2) replaces an empty folder and fails on a non-empty one: no check-then-act
            # race with another writer of the same path.
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise refuse() from None
            raise WriteError(f"cannot create the store {path}: {describe_os_error(exc)}") from None
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class FeatureStore:
    """Read side of the store: the index in memory, features read per batch from each part's
    files (positional reads of the rows asked, nothing kept resident)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta = _read_meta(self.path)
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.fields: list[str] = list(meta["fields"])
        self.modalities = _specs_from_meta(meta, self.path / META_FILE)
        good, bad = scan_parts(self.path, self.modalities, self.fields)
        if bad:
            raise StoreDamagedError(_damage_report(self.path, bad))
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
