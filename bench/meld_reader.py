"""MELD reader on a real copy of MELD's CSVs: rows per split and label against the paper.

    .venv/bin/python bench/meld_reader.py [--root /work/shared/data/meld] [--out DIR]

Runs the ``meld`` corpus reader (the copy here has the CSVs only, so the manifest is text-only),
prints rows per split and per split x label, checks the train and validation row counts and the
train label counts of the paper's Table 2, and the reader's time. Exit status 1 when a check
fails; a missing root is reported and exits 0. Last line: ``meld_train_rows: <rows>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from emomatch.corpora.base import CORPORA
from emomatch.corpora.meld import MELD_CLASSES

EXPECTED_ROWS = {"train": 9989, "validation": 1109}
#: train split, the paper's Table 2 (and MELD's own statistics)
EXPECTED_TRAIN = {
    "anger": 1109,
    "disgust": 271,
    "fear": 268,
    "joy": 1743,
    "neutral": 4710,
    "sadness": 683,
    "surprise": 1205,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/data/meld"))
    parser.add_argument("--out", type=Path, default=None, help="manifest folder (default: temp)")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"MELD copy not found at {args.root}: nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        import emomatch.corpora.meld  # noqa: F401  (registers the reader)

        began = time.perf_counter()
        prepared = CORPORA.get("meld")(args.root, out)
        seconds = time.perf_counter() - began
    print(f"root {args.root}: {prepared.rows} rows in {seconds:.2f} s")
    for line in prepared.problems:
        print(f"  note: {line}")
    per_split = prepared.counts["split_label"]
    print(f"{'split':<12}{'rows':>7}  " + "".join(f"{c:>9}" for c in MELD_CLASSES))
    for split, labels in per_split.items():
        total = sum(labels.values())
        print(f"{split:<12}{total:>7}  " + "".join(f"{labels[c]:>9}" for c in MELD_CLASSES))
    failures = []
    for split, expected in EXPECTED_ROWS.items():
        found = prepared.counts["split"].get(split, 0)
        if found != expected:
            failures.append(f"{split} rows: expected {expected}, found {found}")
    train = per_split.get("train", {})
    for label, expected in EXPECTED_TRAIN.items():
        if train.get(label, 0) != expected:
            failures.append(f"train {label}: expected {expected}, found {train.get(label, 0)}")
    print(
        "check: " + ("train/validation rows and Table 2 train counts match" if not failures else "")
    )
    for failure in failures:
        print(f"  MISMATCH {failure}")
    print(f"meld_train_rows: {prepared.counts['split'].get('train', 0)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
