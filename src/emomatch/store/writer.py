"""Writing a store: whole parts into a temporary folder renamed into place, under the store's
lock, so an interrupted writer leaves a readable store and a resumed one knows what is done."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.domain import MODALITIES, __version__
from emomatch.errors import LockedError, StoreError, WriteError
from emomatch.files import (
    LOCK_FILE,
    atomic_write_text,
    default_file_mode,
    describe_os_error,
    fsync_dir,
    hold_lock,
)
from emomatch.store.parts import scan_parts
from emomatch.store.spec import (
    BASE_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_FILE,
    META_FILE,
    PARTS_DIR,
    ModalitySpec,
    finished_parts,
    length_column,
    read_meta,
)

log = logging.getLogger(__name__)


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
                old = read_meta(self.path)
                for key in ("classes", "fields", "modalities"):
                    if old[key] != meta[key]:
                        raise StoreError(
                            f"{self.path} was written with other {key} ({old[key]!r}); "
                            f"refusing to mix in {meta[key]!r}"
                        )
            elif finished_parts(self.path):
                read_meta(self.path)  # raises: parts of unknown settings are not added to
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
            col = length_column(name)
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
            fsync_file(tmp / INDEX_FILE)
            for name, spec in self.modalities.items():
                with open(tmp / f"{name}.npy", "wb") as fh:
                    np.save(fh, stored_values(name, arrays[name], spec))
                    fh.flush()
                    os.fsync(fh.fileno())
            # mkdtemp makes the folder private (0700); a store is meant to be shared.
            os.chmod(tmp, 0o777 & ~umask_bits())
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


def stored_values(name: str, values: np.ndarray, spec: ModalitySpec) -> np.ndarray:
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


def umask_bits() -> int:
    return 0o666 & ~default_file_mode()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_abandoned(path: Path) -> None:
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
        if (path / META_FILE).exists() or finished_parts(path):
            return StoreError(
                f"{path} already holds a feature store; write the new one into another folder "
                "(or delete this one first)"
            )
        return StoreError(f"{path} exists and is not an empty folder; choose another folder")

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise refuse()
    remove_abandoned(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    except OSError as exc:
        raise WriteError(f"cannot create the store {path}: {describe_os_error(exc)}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask_bits())
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
