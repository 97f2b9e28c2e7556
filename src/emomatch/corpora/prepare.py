"""``emomatch prepare``: the one place that knows every reader.

The readers register themselves in :data:`~emomatch.corpora.base.CORPORA` when imported; this
module imports them all, so the registry is complete here while the base module (which the
readers import) knows none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import emomatch.corpora.ami  # noqa: F401
import emomatch.corpora.folder  # noqa: F401
import emomatch.corpora.iemocap  # noqa: F401
import emomatch.corpora.meld  # noqa: F401
from emomatch.corpora.base import CORPORA, PROBLEMS_FILE, PreparedCorpus
from emomatch.corpora.record import CORPUS_LANGUAGES, corpus_record, write_corpus_record
from emomatch.errors import DataError
from emomatch.files import atomic_write_text


def prepare_corpus(name: str, root: Path, out: Path, **options: Any) -> PreparedCorpus:
    """Run the registered reader ``name``; its problems also go to ``out/problems.txt``, one per
    line, so a long list survives the terminal."""
    try:
        reader = CORPORA.get(name)
    except KeyError as exc:
        raise DataError(str(exc.args[0])) from None
    prepared = reader(Path(root), Path(out), **options)
    # a folder of clips is named after itself: "folder" says nothing about what it holds
    title = Path(root).resolve().name if name == "folder" else name
    write_corpus_record(out, corpus_record(title, False, CORPUS_LANGUAGES.get(name)))
    report = Path(out) / PROBLEMS_FILE
    atomic_write_text(report, "".join(f"{p}\n" for p in prepared.problems))
    return prepared
