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
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from emomatch.domain import __version__
from emomatch.errors import DataError, EmomatchError, WriteError
from emomatch.files import atomic_path, atomic_write_bytes, atomic_write_text, describe_os_error
from emomatch.rundir import CONFIG_FILE, METRICS_FILE, RunFolder, checkpoint_metadata

BUNDLE_FORMAT = "emomatch-model-bundle"
BUNDLE_VERSION = 1
META_FILE = "bundle.json"
CARD_FILE = "README.md"
WEIGHTS_DIR = "weights"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
#: a bundle is megabytes; a member far larger is not one of ours (a decompression bomb)
_MAX_MEMBER_BYTES = 4 << 30


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
    metrics = folder.read_metrics() if folder.is_finished() else {}
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
        if out.is_dir():
            out.rmdir()  # empty (checked above): replaced in one rename
        os.rename(tmp, out)
    except OSError as exc:
        raise WriteError(f"cannot write the bundle {out}: {describe_os_error(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    written = {"folder": out}
    if archive:
        written["archive"] = write_archive(out, out.parent / f"{out.name}.tar.gz")
    return written


def write_archive(folder: str | Path, target: str | Path) -> Path:
    """The bundle folder as one ``.tar.gz`` or ``.zip`` file (by ``target``'s suffix), its
    files under one top folder named like the bundle; written atomically."""
    folder, target = Path(folder), Path(target)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    try:
        with atomic_path(target) as tmp:
            if target.name.endswith(".zip"):
                with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                    for p in files:
                        zf.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
            else:
                with tarfile.open(tmp, "w:gz") as tf:
                    for p in files:
                        info = tf.gettarinfo(str(p), f"{folder.name}/{p.relative_to(folder)}")
                        # owner and time of the machine it was made on are nobody's business
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mode = 0o644
                        with open(p, "rb") as fh:
                            tf.addfile(info, fh)
    except OSError as exc:
        raise WriteError(f"cannot write {target}: {describe_os_error(exc)}") from None
    return target


def _archive_files(path: Path) -> dict[str, bytes]:
    """Relative name -> content of each regular file of an archived bundle, read in memory;
    links, devices and names that climb out of the archive are refused."""
    files: dict[str, bytes] = {}
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    if info.file_size > _MAX_MEMBER_BYTES:
                        raise BundleError(f"{path}: member {info.filename} is too large")
                    files[info.filename] = zf.read(info)
        else:
            with tarfile.open(path, "r:*") as tf:
                for member in tf.getmembers():
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BundleError(
                            f"{path}: member {member.name} is not a regular file (links and "
                            "devices are refused)"
                        )
                    if member.size > _MAX_MEMBER_BYTES:
                        raise BundleError(f"{path}: member {member.name} is too large")
                    handle = tf.extractfile(member)
                    assert handle is not None
                    files[member.name] = handle.read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from None
    for name in files:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise BundleError(f"{path}: member {name!r} lies outside the archive")
    # one top folder (the bundle's name) holds everything: names are taken relative to it
    tops = {PurePosixPath(n).parts[0] for n in files}
    if len(tops) == 1 and META_FILE not in files:
        top = next(iter(tops))
        files = {str(PurePosixPath(n).relative_to(top)): b for n, b in files.items()}
    return files


def _folder_files(path: Path) -> dict[str, bytes]:
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            files[p.relative_to(path).as_posix()] = p.read_bytes()
    return files


def _field(meta: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind):
        raise BundleError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    return value


def read_bundle(path: str | Path) -> Bundle:
    """A bundle folder or archive, checked: every error names the file or field."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if path.is_dir():
        files = _folder_files(path)
    elif path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIXES):
            raise BundleError(
                f"{path}: a bundle is a folder or a {', '.join(ARCHIVE_SUFFIXES)} file "
                "(written by `emomatch export`)"
            )
        files = _archive_files(path)
    else:
        raise BundleError(f"bundle {path} does not exist")
    where = f"{path}/{META_FILE}" if path.is_dir() else f"{path}:{META_FILE}"
    if META_FILE not in files:
        raise BundleError(f"{path} is not a model bundle: {META_FILE} is missing")
    try:
        meta = json.loads(files[META_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: 'format' is not {BUNDLE_FORMAT!r}")
    if meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{where}: format_version {meta.get('format_version')!r} is not supported "
            f"(this emomatch reads {BUNDLE_VERSION})"
        )
    labels = _field(meta, "labels", list, where)
    modalities = _field(meta, "modalities", list, where)
    shapes = _field(meta, "shapes", dict, where)
    features = _field(meta, "features", dict, where)
    member_meta = _field(meta, "members", list, where)
    if not labels or not all(isinstance(c, str) for c in labels):
        raise BundleError(f"{where}: 'labels' must be a non-empty list of names")
    for m in modalities:
        if m not in shapes or m not in features:
            raise BundleError(f"{where}: modality {m!r} has no shape or no feature provenance")
    if not member_meta:
        raise BundleError(f"{where}: 'members' is empty: the bundle holds no weights")
    members = []
    for k, info in enumerate(member_meta):
        name = info.get("weights") if isinstance(info, dict) else None
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{where}: members[{k}].weights names no file of the bundle")
        try:
            tensors = load(files[name])
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise BundleError(
                f"{path}: {name} is not a readable safetensors file ({exc})"
            ) from None
        members.append(tensors)
    try:
        config = yaml.safe_load(files.get(CONFIG_FILE, b"").decode("utf-8")) or {}
        metrics = json.loads(files[METRICS_FILE]) if METRICS_FILE in files else {}
    except (UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{path}: {CONFIG_FILE} or {METRICS_FILE} cannot be read ({exc})"
        ) from None
    if not isinstance(config, dict) or "model" not in config:
        raise BundleError(f"{path}: {CONFIG_FILE} is missing or has no 'model' section")
    card = files.get(CARD_FILE, b"").decode("utf-8", errors="replace")
    return Bundle(str(path), meta, config, members, metrics, card)


def bundle_listing(path: str | Path) -> list[str]:
    """The names of a bundle's files (folder or archive), for inspection and tests."""
    path = Path(path)
    files = _folder_files(path) if path.is_dir() else _archive_files(path)
    return sorted(files)
