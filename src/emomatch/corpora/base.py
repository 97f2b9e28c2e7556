"""What every corpus reader returns, and the registry readers add themselves to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from emomatch.registry import Registry


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
