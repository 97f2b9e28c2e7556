"""What a corpus is, recorded beside its manifest (``corpus.json``) and carried on into the
feature store and the model bundle: its name, whether it is real or generated, its language.

A model trained on generated clips must be able to say so wherever it is applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emomatch.files import atomic_write_text

RECORD_FILE = "corpus.json"

#: the language of the corpora emomatch reads (a folder of clips: unknown)
CORPUS_LANGUAGES = {"iemocap": "en", "meld": "en", "ami": "en"}


def corpus_record(name: str, synthetic: bool, language: str | None) -> dict[str, Any]:
    return {"name": name, "synthetic": bool(synthetic), "language": language}


def write_corpus_record(folder: str | Path, record: dict[str, Any]) -> Path:
    path = Path(folder) / RECORD_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_corpus_record(manifest: str | Path) -> dict[str, Any]:
    """The record beside ``manifest``; a manifest a user wrote has none, so its clips count as
    real recordings named after the manifest's folder, language unknown."""
    manifest = Path(manifest)
    path = manifest.parent / RECORD_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and isinstance(saved.get("name"), str):
        language = saved.get("language")
        return corpus_record(
            saved["name"],
            saved.get("synthetic") is True,
            language if isinstance(language, str) else None,
        )
    return corpus_record(manifest.resolve().parent.name or str(manifest), False, None)
