"""Speech-to-text on speech it cannot read: English clips vs German ones through tiny.en.

    .venv/bin/python bench/asr_language.py [--english DIR] [--other DIR] [--limit 14]

Decodes each clip as ``emomatch transcribe`` does (``emomatch.extract.asr.run_model``: temperature
0, the bundled English-only tiny.en) and prints, per clip, the lowest segment mean token
log-probability and the text or refusal; then how many of each language were kept and refused.
Defaults: CREMA-D's sample clips (English) and EmoDB (German) in /work/shared/data; a folder that
is missing is said and skipped. Last lines ``english_refused: K/N``, ``other_refused: K/N``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emomatch.extract.asr import build_model, model_dir, run_model
from emomatch.extract.audio import load_audio

SUFFIXES = (".wav", ".flv", ".mp4", ".flac")


def clips(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        print(f"missing: {folder}")
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--english", type=Path, default=Path("/work/shared/data/cremad-sample"))
    parser.add_argument("--other", type=Path, default=Path("/work/shared/data/emodb/wav"))
    parser.add_argument("--limit", type=int, default=14)
    args = parser.parse_args()
    folder, name = model_dir(None)
    model = build_model(folder, "cpu", "int8")
    print(f"model: {name}")
    counts = {}
    for language, where in (("english", args.english), ("other", args.other)):
        found = clips(where, args.limit)
        refused = 0
        for path in found:
            text, _, note = run_model(model, load_audio(path), "en", 1, True)
            refused += bool(note)
            print(f"{language} {path.name}: {note or repr(text)}")
        counts[language] = (refused, len(found))
    for language, (refused, total) in counts.items():
        print(f"{language}_refused: {refused}/{total}")


if __name__ == "__main__":
    main()
