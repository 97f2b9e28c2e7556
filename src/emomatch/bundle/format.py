"""The model bundle: everything needed to apply a trained run to new recordings, in one folder
(or one ``.tar.gz`` / ``.zip`` file) that holds no pickle and no path of the machine it was
made on.

Layout::

    bundle.json          format, labels, modalities, input shapes, feature provenance (the
                         extractor settings and versions that made the training features),
                         the ensemble members and their weight files
    config.yaml          the run's resolved experiment config (store paths cut to their names)
    weights/*.safetensors one file per member (seed): the model's weights under ``model.`` and
                         the z-normalization statistics under ``normalizer.``
    metrics.json         the run's training metrics (validation-selected, test scores)
    README.md            the model card

Reading uses ``json``, ``yaml.safe_load`` and ``safetensors`` only: opening a bundle from
someone else never runs their code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from emomatch.domain import MODALITIES, __version__
from emomatch.errors import DataError, EmomatchError, WriteError
from emomatch.files import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    describe_os_error,
    lock_holder,
)
from emomatch.rundir import CONFIG_FILE, METRICS_FILE, RunFolder, checkpoint_metadata

if TYPE_CHECKING:
    from emomatch.store import FeatureStore

BUNDLE_FORMAT = "emomatch-model-bundle"
BUNDLE_VERSION = 1
META_FILE = "bundle.json"
CARD_FILE = "README.md"
WEIGHTS_DIR = "weights"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


class BundleError(DataError):
    """A bundle that cannot be read: names the file or field and what is wrong."""


@dataclass
class Bundle:
    """A bundle's contents in memory (weights as tensors), whatever it was read from."""

    source: str
    meta: dict[str, Any]
    config: dict[str, Any]
    #: one state dict per member: ``model.*`` and ``normalizer.*`` tensors
    members: list[dict[str, Any]]
    metrics: dict[str, Any]
    card: str

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(int(d) for d in s) for m, s in self.meta["shapes"].items()}

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return {m: dict(v) for m, v in self.meta["features"].items()}


def _portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with store paths cut to their folder names: a bundle says which store it was
    trained on without naming a machine's folders."""
    out = json.loads(json.dumps(config))
    data = out.get("data", {})
    for key in ("store", "unlabeled_store"):
        if data.get(key):
            data[key] = PurePosixPath(str(data[key]).replace("\\", "/")).name
    return out


def training_data(store: FeatureStore, classes: list[str]) -> dict[str, Any]:
    """What a model was trained on, from its store's record: corpus name, generated or real,
    language (None: unknown) and classes; a store written before the record says "unknown"."""
    info = store.meta.get("info") or {}
    corpus = info.get("corpus") if isinstance(info, dict) else None
    if not isinstance(corpus, dict):
        synthetic = isinstance(info, dict) and info.get("generator") == "emomatch.synthetic"
        corpus = {"name": "unknown", "synthetic": synthetic, "language": None}
    return {**corpus, "classes": classes}


def export_bundle(
    run: str | Path,
    out: str | Path,
    archive: bool = False,
    store: str | Path | None = None,
) -> dict[str, Path]:
    """Write the bundle of a finished run (``emomatch train``'s folder; one trained with
    ``--seeds N`` becomes an ensemble of its N members) to the folder ``out``, and with
    ``archive`` also ``out.tar.gz``. ``store`` names where the training features are when the
    run's store has moved: its recorded extractor settings become the bundle's provenance.
    Returns the paths written (``folder`` and maybe ``archive``)."""
    import torch
    from safetensors.torch import save

    from emomatch.bundle.card import model_card
    from emomatch.evaluation.predict import load_checkpoint
    from emomatch.store import FeatureStore
    from emomatch.store.provenance import store_provenance

    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise EmomatchError(f"run folder {run} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EmomatchError(f"{out} exists and is not an empty folder; choose another --out")
    folder = RunFolder(run)
    if folder.is_fold_set():
        # each fold is a model trained on other speakers: no one of them is "the" model
        folds = [f.path.name for f in folder.folds()]
        raise EmomatchError(
            f"{run} holds one run per fold ({', '.join(folds)}); export one of them, e.g. "
            f"{run / folds[0]}"
        )
    checkpoints = folder.scoring_checkpoints()
    missing = [p for p in checkpoints if not p.is_file()]
    if missing:
        raise EmomatchError(
            f"{run} holds no finished run: {missing[0]} does not exist (train it to the end, "
            "or give the run folder written by `emomatch train`)"
        )
    writer = lock_holder(run)
    if writer is not None and writer != os.getpid():
        raise EmomatchError(
            f"{run} is being trained now (pid {writer}): its checkpoints are not final; export "
            "it when the training has finished"
        )
    if not folder.is_finished():
        # written last, after the test split is scored: without it the run stopped early (or
        # this is a copy made before the end) and its checkpoint may be any epoch's
        raise EmomatchError(
            f"{run} holds no finished run: {METRICS_FILE} is missing, so its training was "
            "interrupted or is still going; finish it (`emomatch train CONFIG --out RUN "
            "--resume`) and export then"
        )
    members: list[dict[str, torch.Tensor]] = []
    member_meta: list[dict[str, Any]] = []
    first = None
    for path in checkpoints:
        module = load_checkpoint(path)
        if first is None:
            first = module
        elif module.classes != first.classes or module.shapes != first.shapes:
            raise EmomatchError(f"{path}: its classes or input shapes differ from {checkpoints[0]}")
        tensors = {f"model.{k}": v for k, v in module.model.state_dict().items()}
        tensors.update({f"normalizer.{k}": v for k, v in module.normalizer.state_dict().items()})
        members.append({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        saved = checkpoint_metadata(path)
        member_meta.append(
            {
                "weights": f"{WEIGHTS_DIR}/seed_{module.cfg.seed}.safetensors",
                "seed": module.cfg.seed,
                "epoch": saved.get("epoch"),
                "averaged_epochs": saved.get("averaged_epochs"),
            }
        )
    assert first is not None
    cfg = first.cfg
    modalities = list(first.model.modalities)
    source = Path(store) if store is not None else cfg.data.store
    if not (Path(source) / "store.json").is_file():
        raise EmomatchError(
            f"the run's training store {source} is gone, so the settings that made its features "
            "are unknown; give the store (or a copy) with --store"
        )
    features_store = FeatureStore(source)
    provenance = store_provenance(features_store, modalities)
    for m in modalities:
        recorded = features_store.modalities[m].shape
        if tuple(recorded) != tuple(first.shapes[m]):
            raise EmomatchError(
                f"store {source}: {m} features have shape {list(recorded)}, the run was trained "
                f"on {list(first.shapes[m])}; give the run's own store with --store"
            )
    metrics = folder.read_metrics()
    config = _portable_config(cfg.model_dump(mode="json"))
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "emomatch_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "run": run.resolve().name,
        "labels": list(first.classes),
        "modalities": modalities,
        "shapes": {m: list(first.shapes[m]) for m in modalities},
        "missing": cfg.data.missing,
        "features": provenance,
        "training_data": training_data(features_store, list(first.classes)),
        "members": member_meta,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        (tmp / WEIGHTS_DIR).mkdir()
        for tensors, info in zip(members, member_meta, strict=True):
            atomic_write_bytes(tmp / info["weights"], save(tensors, metadata={"format": "pt"}))
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")
        atomic_write_text(tmp / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(tmp / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        atomic_write_text(tmp / CARD_FILE, model_card(meta, config, metrics))
        os.chmod(tmp, 0o755)
        written = {"folder": out}
        if archive:
            # before the folder is in place: an export stopped at any moment leaves either
            # nothing in the way of its rerun or the whole bundle (the archive is replaced)
            written["archive"] = write_archive(tmp, out.parent / f"{out.name}.tar.gz", out.name)
        if out.is_dir():
            out.rmdir()  # empty (checked above): replaced in one rename
        os.rename(tmp, out)
    except OSError as exc:
        raise WriteError(f"cannot write the bundle {out}: {describe_os_error(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def write_archive(folder: str | Path, target: str | Path, name: str | None = None) -> Path:
    """The bundle folder as one ``.tar.gz`` or ``.zip`` file (by ``target``'s suffix), its
    files under one top folder named ``name`` (default: the folder's); written atomically."""
    folder, target = Path(folder), Path(target)
    top = name or folder.name
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    try:
        with atomic_path(target) as tmp:
            if target.name.endswith(".zip"):
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in files:
                        zf.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
            else:
                with tarfile.open(tmp, "w:gz") as tf:
                    for p in files:
                        info = tf.gettarinfo(str(p), f"{top}/{p.relative_to(folder)}")
                        # owner and time of the machine it was made on are nobody's business
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mode = 0o644
                        with open(p, "rb") as fh:
                            tf.addfile(info, fh)
    except OSError as exc:
        raise WriteError(f"cannot write {target}: {describe_os_error(exc)}") from None
    return target


@dataclass(frozen=True)
class BundleLimits:
    """What a bundle may hold. A bundle is megabytes (the paper-size model's weights are about
    200 MB a member); anything far past these is not one of ours but a decompression bomb or a
    file padded to exhaust memory, and is refused before it is read."""

    #: one weights file
    file_bytes: int = 512 << 20
    #: bundle.json, config.yaml, metrics.json, README.md, each
    text_bytes: int = 4 << 20
    #: all members of an archive together (as they unpack), and the weights of a folder
    total_bytes: int = 2 << 30
    #: entries of an archive
    members: int = 256


_TEXT_FILES = (META_FILE, CONFIG_FILE, METRICS_FILE, CARD_FILE)
#: how a bundle names a member's weights (``weights/seed_0.safetensors``)
_WEIGHTS_NAME = r"^weights/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\.safetensors$"
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _wanted(name: str) -> bool:
    """Whether an archive member may be one of the bundle's files (at the archive's top or
    under one top folder): only those are read, the rest is skipped unread."""
    parts = PurePosixPath(name).parts
    if parts and parts[-1] in _TEXT_FILES and len(parts) <= 2:
        return True
    return len(parts) in (2, 3) and parts[-2] == WEIGHTS_DIR and name.endswith(".safetensors")


def _read_at_most(handle: Any, limit: int, what: str, expected: int) -> bytes:
    """The handle's content, ``expected`` bytes by its header or size, refused past ``limit``
    (the file may have grown). ``read(n)`` sets aside n bytes first: never asked for more."""
    data = handle.read(min(expected, limit) + 1)
    while len(data) <= limit:
        more = handle.read(min(1 << 20, limit + 1 - len(data)))
        if not more:
            return bytes(data)
        data += more
    raise BundleError(f"{what} is larger than a bundle file may be ({_size(limit)})")


def _archive_files(path: Path, limits: BundleLimits) -> tuple[list[str], dict[str, bytes]]:
    """The names of an archived bundle's regular files and the content of those that may be
    bundle files, streamed: each member's size is checked from its header before it is read,
    so a padded or bombed archive is refused without unpacking it. Links, devices and names
    that climb out of the archive are refused."""
    names: list[str] = []
    files: dict[str, bytes] = {}
    total = 0

    def admit(name: str, size: int) -> bool:
        nonlocal total
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise BundleError(f"{path}: member {name!r} lies outside the archive")
        if len(names) >= limits.members:
            raise BundleError(
                f"{path}: more than {limits.members} members; not a bundle written by "
                "`emomatch export`"
            )
        wanted = _wanted(name)
        limit = (
            limits.text_bytes
            if wanted and parts[-1] in _TEXT_FILES
            else min(limits.file_bytes, limits.total_bytes)
        )
        if size > limit:
            raise BundleError(
                f"{path}: member {name} unpacks to {_size(size)}, more than a bundle file may "
                f"be ({_size(limit)})"
            )
        total += size
        if total > limits.total_bytes:
            raise BundleError(
                f"{path}: its members unpack to more than {_size(limits.total_bytes)}; not a "
                "bundle written by `emomatch export`"
            )
        names.append(name)
        return wanted

    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise BundleError(
                            f"{path}: member {info.filename} is not a regular file (links and "
                            "devices are refused)"
                        )
                    if admit(info.filename, info.file_size):
                        with zf.open(info) as fh:
                            files[info.filename] = _read_at_most(
                                fh,
                                info.file_size,
                                f"{path}: member {info.filename}",
                                info.file_size,
                            )
        else:
            with tarfile.open(path, "r:*") as tf:
                for member in tf:
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BundleError(
                            f"{path}: member {member.name} is not a regular file (links and "
                            "devices are refused)"
                        )
                    if admit(member.name, member.size):
                        handle = tf.extractfile(member)
                        assert handle is not None
                        files[member.name] = _read_at_most(
                            handle, member.size, f"{path}: member {member.name}", member.size
                        )
                    # tarfile keeps every member it has passed: bounded by limits.members
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from None
    # one top folder (the bundle's name) holds everything: names are taken relative to it
    tops = {PurePosixPath(n).parts[0] for n in names}
    if len(tops) == 1 and META_FILE not in names:
        top = next(iter(tops))

        def inner(n: str) -> str:
            return str(PurePosixPath(n).relative_to(top))

        names = [inner(n) for n in names]
        files = {inner(n): b for n, b in files.items()}
    return names, files


class _FolderReader:
    """A bundle folder's files, read one by one as they are asked for, each only after its
    size is known to be within the limits (a folder may be anything: a home directory)."""

    def __init__(self, path: Path, limits: BundleLimits) -> None:
        self.path = path
        self.limits = limits
        self.total = 0

    def __call__(self, name: str) -> bytes | None:
        target = self.path / name
        if target.is_symlink():
            raise BundleError(f"{target}: links are refused in a bundle")
        try:
            info = target.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BundleError(f"{target}: cannot be read ({describe_os_error(exc)})") from None
        if not stat.S_ISREG(info.st_mode):
            return None
        limit = self.limits.text_bytes if name in _TEXT_FILES else self.limits.file_bytes
        if info.st_size > limit:
            raise BundleError(
                f"{target} is {_size(info.st_size)}, more than a bundle file may be "
                f"({_size(limit)})"
            )
        self.total += info.st_size
        if self.total > self.limits.total_bytes:
            raise BundleError(
                f"{self.path}: its files are more than {_size(self.limits.total_bytes)} together"
            )
        try:
            with open(target, "rb") as fh:
                return _read_at_most(fh, limit, str(target), info.st_size)
        except OSError as exc:
            raise BundleError(f"{target}: cannot be read ({describe_os_error(exc)})") from None


class _Member(BaseModel):
    model_config = ConfigDict(extra="allow")
    weights: Annotated[str, StringConstraints(pattern=_WEIGHTS_NAME)]


class _Meta(BaseModel):
    """What a reader relies on in bundle.json; other fields are kept as they are."""

    model_config = ConfigDict(extra="allow")
    labels: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=1000
    )
    modalities: list[str] = Field(min_length=1, max_length=len(MODALITIES))
    shapes: dict[str, list[Annotated[StrictInt, Field(ge=1, le=1 << 20)]]]
    features: dict[str, dict[str, Any]]
    members: list[_Member] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> _Meta:
        if len(set(self.labels)) != len(self.labels):
            twice = sorted({c for c in self.labels if self.labels.count(c) > 1})
            raise ValueError(f"labels: {', '.join(map(repr, twice))} given twice")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError("modalities: a modality is given twice")
        for m in self.modalities:
            if m not in MODALITIES:
                raise ValueError(f"modalities: {m!r} is not one of {', '.join(MODALITIES)}")
            if m not in self.shapes or m not in self.features:
                raise ValueError(f"modality {m!r} has no shape or no feature provenance")
            shape = self.shapes[m]
            if not 1 <= len(shape) <= 2 or math.prod(shape) > 1 << 24:
                raise ValueError(
                    f"shapes.{m}: {shape} is not the shape of one utterance's features "
                    "((dims) or (positions, dims), at most 2**24 values)"
                )
        weights = [member.weights for member in self.members]
        if len(set(weights)) != len(weights):
            raise ValueError("members: two members name the same weights file")
        return self


def _schema_problem(exc: ValidationError) -> str:
    shown = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        shown.append(f"{loc}: {msg}" if loc else msg)
    more = len(exc.errors()) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{where}: not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, over-long integers
        raise BundleError(f"{where}: not valid JSON ({exc})") from None


def _weights(data: bytes, name: str, source: Path) -> dict[str, Any]:
    """A member's tensors: a safetensors file of floating-point, finite tensors, its header
    checked before anything is allocated (shapes against the model come later, in the
    predictor)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    where = f"{source}: {name}"
    if len(data) < 8 or int.from_bytes(data[:8], "little") > len(data) - 8:
        raise BundleError(f"{where} is not a readable safetensors file (bad header length)")
    header = _parse_json(data[8 : 8 + int.from_bytes(data[:8], "little")], where)
    if not isinstance(header, dict):
        raise BundleError(f"{where} is not a readable safetensors file (bad header)")
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in _FLOAT_DTYPES:
            raise BundleError(
                f"{where}: tensor {key} is of type {dtype}, not floating point (weights are "
                f"{', '.join(_FLOAT_DTYPES)})"
            )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{where} is not a readable safetensors file ({exc})") from None
    for key, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise BundleError(f"{where}: tensor {key} holds NaN or infinite values")
    return dict(tensors)


def read_bundle(path: str | Path, limits: BundleLimits | None = None) -> Bundle:
    """A bundle folder or archive, checked against its schema before anything is built from
    it: every error names the file or field. ``limits`` bounds what is read (see
    :class:`BundleLimits`)."""
    limits = limits or BundleLimits()
    path = Path(path)
    names: list[str] | None = None
    if path.is_dir():
        read: Any = _FolderReader(path, limits)
        where = f"{path}/{META_FILE}"
    elif path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise BundleError(
                f"{path}: a bundle is a folder or a {', '.join(ARCHIVE_SUFFIXES)} file "
                "(written by `emomatch export`)"
            )
        names, files = _archive_files(path, limits)
        read = files.get
        where = f"{path}:{META_FILE}"
    else:
        raise BundleError(f"bundle {path} does not exist")
    # bundle.json first: a folder that is not a bundle is refused before anything else is read
    raw = read(META_FILE)
    if raw is None:
        raise BundleError(f"{path} is not a model bundle: {META_FILE} is missing")
    meta = _parse_json(raw, where)
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: 'format' is not {BUNDLE_FORMAT!r}")
    if meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{where}: format_version {meta.get('format_version')!r} is not supported "
            f"(this emomatch reads {BUNDLE_VERSION})"
        )
    try:
        _Meta.model_validate(meta)
    except ValidationError as exc:
        raise BundleError(f"{where}: {_schema_problem(exc)}") from None
    members = []
    for k, info in enumerate(meta["members"]):
        name = info["weights"]
        data = read(name)
        if data is None:
            raise BundleError(f"{where}: members[{k}].weights names no file of the bundle")
        members.append(_weights(data, name, path))
    config_text = read(CONFIG_FILE) or b""
    try:
        config = yaml.safe_load(config_text.decode("utf-8")) or {}
    except RecursionError:
        raise BundleError(f"{path}: {CONFIG_FILE} is not valid YAML (nested too deeply)") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BundleError(f"{path}: {CONFIG_FILE} cannot be read ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise BundleError(f"{path}: {CONFIG_FILE} is missing or has no 'model' section")
    metrics_raw = read(METRICS_FILE)
    metrics = _parse_json(metrics_raw, f"{path}: {METRICS_FILE}") if metrics_raw else {}
    if not isinstance(metrics, dict):
        raise BundleError(f"{path}: {METRICS_FILE} is not a JSON object")
    card = (read(CARD_FILE) or b"").decode("utf-8", errors="replace")
    return Bundle(str(path), meta, config, members, metrics, card)


def bundle_listing(path: str | Path, limits: BundleLimits | None = None) -> list[str]:
    """The names of a bundle's files (folder or archive), for inspection and tests; nothing
    is read but an archive's headers."""
    path = Path(path)
    if path.is_dir():
        return sorted(
            p.relative_to(path).as_posix()
            for p in path.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
    return sorted(_archive_files(path, limits or BundleLimits())[0])
