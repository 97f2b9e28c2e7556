"""What every corpus reader returns, and the registry readers add themselves to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from emomatch.errors import DataError
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


def prepare_corpus(name: str, root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """Run the registered reader ``name``; its problems also go to ``out/problems.txt``, one per
    line, so a long list survives the terminal."""
    # Readers register themselves on import; importing here keeps the registry complete
    # without the base module knowing them at import time.
    import emomatch.corpora.ami  # noqa: F401
    import emomatch.corpora.iemocap  # noqa: F401
    import emomatch.corpora.meld  # noqa: F401

    try:
        reader = CORPORA.get(name)
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None
    prepared = reader(Path(root), Path(out), **options)
    report = Path(out) / "problems.txt"
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text("".join(f"{p}\n" for p in prepared.problems))
    tmp.replace(report)
    return prepared
