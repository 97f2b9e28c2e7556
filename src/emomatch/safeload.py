"""Reading a checkpoint without running anything it holds.

A Lightning checkpoint is a pickle, and unpickling runs whatever callables the file names: a
``last.ckpt`` replaced on a shared file system (run folders live on cluster disks) would run
its author's code as whoever resumes, evaluates or exports the run. Every checkpoint emomatch
reads therefore goes through :func:`read_checkpoint`, which unpickles with torch's
``weights_only`` loader: tensors, containers and plain values only. Everything emomatch and
Lightning store in a checkpoint is of these kinds (the hyper-parameters are a plain dict, the
callback, loop, optimizer and scheduler states plain values and tensors), so no class needs
allow-listing; a file that names any other global is refused before it is looked at further.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from emomatch.errors import EmomatchError


class CheckpointError(EmomatchError):
    """A checkpoint that cannot be used: damaged, foreign, or holding Python objects."""


#: how torch names the global it refused ("... unsupported GLOBAL posix.system whose ...")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _why(exc: BaseException) -> str:
    """One line saying why torch refused the file; for a refused global, which one."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = _GLOBAL.search(text)
        named = f" (it names {found.group(1)})" if found else ""
        return (
            f"it holds Python objects other than tensors and plain values{named}, which "
            "emomatch never writes and does not load"
        )
    first = text.splitlines()[0] if text else "no detail"
    return f"{type(exc).__name__}: {first}"


def read_checkpoint(
    path: str | Path,
    map_location: Any = "cpu",
    mmap: bool = False,
    problem: str | None = None,
) -> dict[str, Any]:
    """The checkpoint's dict, unpickled with ``weights_only=True`` (no code runs).

    ``mmap`` maps the file instead of reading its tensors, for callers that only want the
    metadata (the epoch). Any failure is one :class:`CheckpointError` whose text starts with
    ``problem`` (default: ``<path> is not a readable emomatch checkpoint``)."""
    import torch

    path = Path(path)
    lead = problem or f"{path} is not a readable emomatch checkpoint"
    try:
        with warnings.catch_warnings():
            # torch warns about a pickle protocol it did not write before refusing the file
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{lead}: the file does not exist") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors
        raise CheckpointError(f"{lead}: {_why(exc)}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise CheckpointError(f"{lead}: it holds no model weights (no 'state_dict')")
    return saved
