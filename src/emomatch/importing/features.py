"""Reading features a user already has (``.npz``, ``.npy``, CSV, Parquet) into a feature store.

Each mapped key gives one modality: a vector ``[D]`` or a sequence ``[T, D]`` per utterance
(sequences zero-padded to the longest, their lengths kept). Rows are matched to the manifest by
id, and every mismatch is an error that names the ids: a store silently missing utterances
would score a model on another test set. The store records ``imported`` provenance (the file's
name, sha256, key and the user's description), so a model trained on it says which features it
needs. Writing goes through :class:`~emomatch.store.StoreWriter`: the store is locked, parts
appear whole, and a rerun skips the utterances already written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emomatch.corpora.manifest import read_manifest, validate_manifest
from emomatch.domain import MODALITIES
from emomatch.errors import DataError
from emomatch.store import ModalitySpec, StoreWriter

log = logging.getLogger(__name__)

#: the extractor name recorded for imported features
IMPORTED = "imported"
#: utterances per store part
PART_ROWS = 512
#: manifest columns copied into the store as fields, as extraction does
_FOLD = re.compile(r"^fold_\d+$")
_SHOWN = 5


@dataclass(frozen=True)
class SplitRule:
    """Rows whose ``column`` holds one of ``values`` get ``split`` (e.g. the test actors)."""

    split: str
    column: str
    values: tuple[str, ...]


def parse_split_rule(text: str) -> SplitRule:
    """``test=speaker:21,22,23,24`` -> SplitRule('test', 'speaker', ('21', '22', '23', '24'))."""
    split, sep, rest = text.partition("=")
    column, sep2, values = rest.partition(":")
    names = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not sep2 or not split.strip() or not column.strip() or not names:
        raise DataError(f"--split {text!r}: expected SPLIT=COLUMN:VALUE[,VALUE...]")
    return SplitRule(split.strip(), column.strip(), names)


@dataclass
class Loaded:
    """One key's features as read: ids, values ``[N, D]`` or ``[N, T, D]``, valid lengths."""

    ids: list[str]
    values: np.ndarray
    lengths: np.ndarray

    @property
    def kind(self) -> str:
        return "vector" if self.values.ndim == 2 else "sequence"


@dataclass
class ImportSummary:
    store: Path
    written: int
    skipped: int
    seconds: float
    modalities: dict[str, ModalitySpec]

    def __str__(self) -> str:
        shapes = ", ".join(f"{m} {s.kind} {list(s.shape)}" for m, s in self.modalities.items())
        return (
            f"imported {self.written}, skipped (already in the store) {self.skipped} into "
            f"{self.store} ({shapes}); {self.seconds:.1f} s"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_ids(values: Any, where: str) -> list[str]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{where}: ids must be one-dimensional, got shape {list(arr.shape)}")
    if arr.dtype.kind in "fc":
        raise DataError(f"{where}: ids are {arr.dtype} numbers; give them as text or integers")
    ids = [str(v) for v in arr.tolist()]
    seen: set[str] = set()
    repeated = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if repeated:
        raise DataError(f"{where}: id(s) repeated: {_listed(repeated)}")
    return ids


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _numeric(values: Any, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numbers, got {arr.dtype}")
    return arr.astype(np.float32)


def _from_array(arr: np.ndarray, ids: list[str], lengths: Any, where: str) -> Loaded:
    values = _numeric(arr, where)
    if values.ndim not in (2, 3):
        raise DataError(
            f"{where}: expected [N, D] (a vector per utterance) or [N, T, D] (a sequence), got "
            f"shape {list(values.shape)}"
        )
    if len(values) != len(ids):
        raise DataError(f"{where}: {len(values)} rows for {len(ids)} ids")
    if values.ndim == 2:
        n = np.ones(len(values), np.int64)
    elif lengths is None:
        n = np.full(len(values), values.shape[1], np.int64)
    else:
        n = np.asarray(lengths)
        if n.shape != (len(values),) or n.dtype.kind not in "iu":
            raise DataError(f"{where}: lengths must be {len(values)} integers")
        if (n < 1).any() or (n > values.shape[1]).any():
            raise DataError(f"{where}: lengths must lie in [1, {values.shape[1]}]")
        n = n.astype(np.int64)
    return Loaded(ids, values, n)


def _load_npz(path: Path, keys: Sequence[str], id_key: str) -> dict[str, Loaded]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot be read as .npz ({exc})") from None
    with archive:
        names = list(archive.files)

        def get(key: str) -> np.ndarray:
            if key not in names:
                raise DataError(f"{path}: no array {key!r} (it holds: {', '.join(names)})")
            try:
                return np.asarray(archive[key])
            except ValueError as exc:
                # object arrays need pickle, which is never used on a user's file
                raise DataError(f"{path}: array {key!r} cannot be read safely ({exc})") from None

        ids = _as_ids(get(id_key), f"{path}: {id_key}")
        out = {}
        for key in keys:
            lengths = get(f"{key}_lengths") if f"{key}_lengths" in names else None
            out[key] = _from_array(get(key), ids, lengths, f"{path}: {key}")
    return out


def _load_npy(path: Path, keys: Sequence[str], manifest_ids: list[str]) -> dict[str, Loaded]:
    if len(keys) != 1:
        raise DataError(f"{path}: a .npy file holds one array; map exactly one modality to it")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as .npy ({exc})") from None
    # One array has no ids: its rows are the manifest's rows, in order.
    return {keys[0]: _from_array(arr, manifest_ids, None, f"{path}")}


def _column_block(
    table: pd.DataFrame, key: str, where: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """A key's values per table row: its ``KEY_0 .. KEY_{D-1}`` columns, or one column ``KEY``
    whose cells are arrays (Parquet list columns) or numbers."""
    numbered = sorted(
        ((int(m.group(1)), c) for c in table.columns if (m := re.fullmatch(rf"{key}_(\d+)", c))),
    )
    if numbered:
        want = list(range(len(numbered)))
        if [n for n, _ in numbered] != want:
            raise DataError(
                f"{where}: columns {key}_0 .. {key}_{len(numbered) - 1} are not all there"
            )
        return _numeric(table[[c for _, c in numbered]].to_numpy(), where), None
    if key not in table.columns:
        raise DataError(
            f"{where}: no column {key!r} nor columns {key}_0, {key}_1, ... "
            f"(columns: {_listed([str(c) for c in table.columns])})"
        )
    cells = table[key].tolist()
    if cells and isinstance(cells[0], np.ndarray | list):
        return _stacked_cells(cells, where)
    return _numeric(np.asarray(cells)[:, None], where), None


def _stacked_cells(cells: list[Any], where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """List cells as one array: vectors stacked, sequences (lists of frames, of any length)
    zero-padded to the longest, with their lengths."""
    rows = []
    for cell in cells:
        arr = np.asarray(cell)
        if arr.dtype == object:  # Parquet gives a list of frames as an array of arrays
            try:
                arr = np.stack([np.asarray(frame) for frame in arr]) if len(arr) else arr
            except ValueError as exc:
                raise DataError(f"{where}: frames of one cell differ in size ({exc})") from None
        rows.append(_numeric(arr, where))
    ndims = {r.ndim for r in rows}
    widths = {r.shape[-1] for r in rows}
    if len(ndims) != 1 or len(widths) != 1 or ndims - {1, 2}:
        raise DataError(f"{where}: cells must all be [D] or all be [T, D] with one D")
    if ndims == {1}:
        return np.stack(rows), None
    lengths = np.array([len(r) for r in rows], np.int64)
    if (lengths < 1).any():
        raise DataError(f"{where}: a sequence has no frame")
    values = np.zeros((len(rows), int(lengths.max()), widths.pop()), np.float32)
    for i, r in enumerate(rows):
        values[i, : len(r)] = r
    return values, lengths


def _load_table(
    path: Path, keys: Sequence[str], id_key: str, frame_column: str | None
) -> dict[str, Loaded]:
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, dtype={id_key: str}, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({exc})") from None
    except Exception as exc:  # pyarrow's ArrowInvalid for a foreign or truncated file
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if id_key not in table.columns:
        raise DataError(
            f"{path}: no id column {id_key!r} (columns: {_listed(list(table.columns))})"
        )
    table[id_key] = table[id_key].astype(str)
    out = {}
    if frame_column is None:
        ids = _as_ids(table[id_key].to_numpy(), f"{path}: {id_key}")
        for key in keys:
            block, lengths = _column_block(table, key, f"{path}: {key}")
            out[key] = _from_array(block, ids, lengths, f"{path}: {key}")
        return out
    # Long format: one row per frame; an utterance's frames in the order of ``frame_column``.
    if frame_column not in table.columns:
        raise DataError(f"{path}: no frame column {frame_column!r}")
    table = table.sort_values([id_key, frame_column], kind="stable")
    if table.duplicated([id_key, frame_column]).any():
        bad = table.loc[table.duplicated([id_key, frame_column]), id_key].unique().tolist()
        raise DataError(f"{path}: a frame repeats within utterance(s) {_listed(bad)}")
    groups = table.groupby(id_key, sort=False).indices
    ids = list(groups)
    longest = max(len(v) for v in groups.values())
    for key in keys:
        block, _ = _column_block(table, key, f"{path}: {key}")
        if block.ndim != 2:
            raise DataError(f"{path}: {key}: with --frame-column each row holds one frame [D]")
        values = np.zeros((len(ids), longest, block.shape[1]), np.float32)
        lengths = np.zeros(len(ids), np.int64)
        for i, uid in enumerate(ids):
            rows = block[groups[uid]]
            values[i, : len(rows)] = rows
            lengths[i] = len(rows)
        out[key] = Loaded(ids, values, lengths)
    return out


def load_features(
    path: Path,
    keys: Sequence[str],
    manifest_ids: list[str],
    id_key: str = "ids",
    frame_column: str | None = None,
) -> dict[str, Loaded]:
    """Each key's features from ``path``, by its suffix (``.npz``, ``.npy``, ``.csv``,
    ``.parquet``); never unpickles."""
    if not path.is_file():
        raise DataError(f"features file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, keys, id_key)
    if suffix == ".npy":
        return _load_npy(path, keys, manifest_ids)
    if suffix in (".csv", ".parquet"):
        return _load_table(path, keys, "id" if id_key == "ids" else id_key, frame_column)
    raise DataError(f"{path}: unknown features format {suffix!r}; use .npz, .npy, .csv or .parquet")


def _aligned(loaded: Loaded, manifest_ids: list[str], where: str) -> Loaded:
    """The features in the manifest's order; ids on one side only are named in the error."""
    position = {uid: i for i, uid in enumerate(loaded.ids)}
    known = set(manifest_ids)
    missing = [uid for uid in manifest_ids if uid not in position]
    extra = [uid for uid in loaded.ids if uid not in known]
    if missing or extra:
        said = []
        if missing:
            said.append(f"{len(missing)} manifest id(s) have no features: {_listed(missing)}")
        if extra:
            said.append(f"{len(extra)} id(s) are not in the manifest: {_listed(extra)}")
        raise DataError(f"{where}: {'; '.join(said)}")
    order = np.array([position[uid] for uid in manifest_ids], dtype=np.int64)
    values, lengths = loaded.values[order], loaded.lengths[order]
    flat = values.reshape(len(values), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        named = [manifest_ids[i] for i in np.flatnonzero(bad)]
        raise DataError(f"{where}: NaN or infinite values for id(s) {_listed(named)}")
    return Loaded(list(manifest_ids), values, lengths)


def assign_splits(df: pd.DataFrame, rules: Sequence[SplitRule], rest: str) -> pd.Series:
    """The split of each manifest row: the first rule that matches it, else the manifest's own
    ``split``, else ``rest``. A rule naming an absent column or a value no row holds is an
    error (a typo there would silently put the test actors into training)."""
    split = df["split"].astype(str).copy()
    taken = pd.Series(False, index=df.index)
    for rule in rules:
        if rule.column not in df.columns:
            raise DataError(f"--split {rule.split}: the manifest has no column {rule.column!r}")
        column = df[rule.column].astype(str)
        unseen = [v for v in rule.values if not (column == v).any()]
        if unseen:
            raise DataError(f"--split {rule.split}: no manifest row has {rule.column} = {unseen}")
        hit = column.isin(rule.values) & ~taken
        split[hit] = rule.split
        taken |= hit
    split[split == ""] = rest
    return split


def import_features(
    features: str | Path,
    manifest: str | Path,
    out: str | Path,
    mapping: Mapping[str, str],
    description: str = "",
    id_key: str = "ids",
    frame_column: str | None = None,
    classes: Sequence[str] | None = None,
    split_rules: Sequence[SplitRule] = (),
    split_rest: str = "train",
) -> ImportSummary:
    """Write (or complete) the store at ``out`` with ``mapping`` (modality -> key in
    ``features``) for every utterance of ``manifest``."""
    start = time.perf_counter()
    features, out = Path(features), Path(out)
    if not mapping:
        raise DataError("give at least one --map MODALITY=KEY")
    unknown = [m for m in mapping if m not in MODALITIES]
    if unknown:
        raise DataError(f"--map: unknown modality {unknown[0]!r}; known: {', '.join(MODALITIES)}")
    df = read_manifest(manifest, defaults={"split": ""})
    # Imported rows need no media: only problems that matter to a store are refused.
    problems = [
        p
        for p in validate_manifest(df, classes=classes, check_files=False)
        if p.message != "no audio, video or text"
    ]
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise DataError(f"manifest {manifest}: {len(problems)} problem(s): {shown}")
    df = df.assign(split=assign_splits(df, split_rules, split_rest))
    manifest_ids = df["id"].astype(str).tolist()
    keys = list(dict.fromkeys(mapping.values()))
    loaded = load_features(features, keys, manifest_ids, id_key, frame_column)
    digest = file_sha256(features)
    arrays: dict[str, Loaded] = {}
    specs: dict[str, ModalitySpec] = {}
    for modality, key in mapping.items():
        got = _aligned(loaded[key], manifest_ids, f"{features}: {key} ({modality})")
        arrays[modality] = got
        provenance = {
            "name": IMPORTED,
            "file": features.name,
            "sha256": digest,
            "key": key,
            "description": description,
        }
        if got.kind == "vector":
            specs[modality] = ModalitySpec("vector", got.values.shape[1], extractor=provenance)
        else:
            specs[modality] = ModalitySpec(
                "sequence", got.values.shape[2], got.values.shape[1], extractor=provenance
            )
    labels = sorted({lab for lab in df["label"] if lab})
    fields = ["split", *[c for c in df.columns if _FOLD.match(c)]]
    with StoreWriter(
        out,
        classes=list(classes) if classes is not None else labels,
        modalities=specs,
        fields=fields,
        info={"manifest": str(Path(manifest).resolve()), "imported": str(features.resolve())},
    ) as writer:
        done = writer.done_ids()
        pending = np.flatnonzero(~df["id"].astype(str).isin(done).to_numpy())
        for begin in range(0, len(pending), PART_ROWS):
            rows = pending[begin : begin + PART_ROWS]
            part = df.iloc[rows]
            index = pd.DataFrame(
                {
                    "id": part["id"].astype(str).to_numpy(),
                    "speaker": part["speaker"].to_numpy(),
                    "label": [lab or None for lab in part["label"]],
                    **{f: part[f].to_numpy() for f in fields},
                    **{f"{m}_length": arrays[m].lengths[rows] for m in specs},
                }
            )
            writer.write_part(index, {m: arrays[m].values[rows] for m in specs})
    summary = ImportSummary(
        store=out,
        written=len(pending),
        skipped=len(df) - len(pending),
        seconds=time.perf_counter() - start,
        modalities=specs,
    )
    log.info("%s", summary)
    return summary
