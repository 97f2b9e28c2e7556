"""What every corpus reader returns, and the registry readers add themselves to."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from emomatch.errors import DataError
from emomatch.registry import Registry

#: where ``emomatch prepare`` lists a corpus's problems, one per line, beside its manifest
PROBLEMS_FILE = "problems.txt"


@dataclass
class PreparedCorpus:
    """The outcome of ``emomatch prepare``: the manifest written, fold files, what was skipped."""

    manifest: Path
    rows: int
    classes: list[str]
    folds: list[Path] = field(default_factory=list)
    #: one human-readable line per skipped or suspicious item (missing clip, bad label line, ...)
    problems: list[str] = field(default_factory=list)
    #: counts a user may want to check (per label, per split, ...)
    counts: dict[str, Any] = field(default_factory=dict)


class CorpusReader(Protocol):
    def __call__(self, root: Path, out: Path, **options: Any) -> PreparedCorpus: ...


CORPORA: Registry[CorpusReader] = Registry("corpus")


def check_options(corpus: str, reader: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """An unknown option is an error that lists the known ones (not a bare TypeError)."""
    known = [n for n in inspect.signature(reader).parameters if n not in ("root", "out")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(
            f"{corpus} reader: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )


def flag_option(value: Any, corpus: str, name: str) -> bool:
    """A yes/no reader option; options may arrive as strings from the command line."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise DataError(f"{corpus} option {name}: expected true or false, got {value!r}")


def int_option(value: Any, corpus: str, name: str, minimum: int = 0) -> int:
    """A whole-number reader option; options may arrive as strings from the command line."""
    whole = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value) is not None)
    )
    if not whole:
        raise DataError(f"{corpus} option {name}: expected a whole number, got {value!r}")
    number = int(value)
    if number < minimum:
        raise DataError(f"{corpus} option {name}: must be at least {minimum}, got {value!r}")
    return number


def int_list_option(value: Any, corpus: str, name: str, minimum: int = 0) -> list[int]:
    """``"1,3"``, ``[1, 3]`` or ``2`` -> a list of whole numbers."""
    if isinstance(value, str):
        items: list[Any] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise DataError(f"{corpus} option {name}: empty list")
    return [int_option(v, corpus, name, minimum) for v in items]


def media_path(path: Path, out: Path, absolute: bool) -> str:
    """A media path as the manifest in ``out`` stores it: relative to ``out`` unless asked."""
    if absolute:
        return str(path.resolve())
    return os.path.relpath(path.resolve(), out.resolve())


L = TypeVar("L")


def layout_with(base: L, changes: Mapping[str, Any], corpus: str) -> L:
    """A layout dataclass with some path patterns replaced; unknown names are an error."""
    known = {f.name for f in fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - known)
    if unknown:
        raise DataError(
            f"{corpus} layout: unknown entr(y/ies) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return replace(base, **{k: str(v) for k, v in changes.items()})  # type: ignore[type-var]
