"""Whole A+V+L extraction of demo clips: openSMILE IS10, Haar faces + mini-Xception, MiniLM words.

    .venv/bin/python bench/extract_all.py [--clips-per-class 40] [--unlabeled 160] [--workers 2]

Generates the raw-media demo corpus (not timed), then times ``run_extraction`` over it with the
demo's extractor options, model loading included. Last line: ``realtime_factor: <x>`` (seconds
of media per second of wall time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from emomatch.demo import MEDIA_EXTRACTORS
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.synthetic.media import write_media_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--unlabeled", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = write_media_corpus(
            Path(tmp) / "media", per_class_labeled=args.clips_per_class, unlabeled=args.unlabeled
        )
        print(f"generated the clips in {time.perf_counter() - t0:.1f} s (not timed below)")
        for modalities in (
            ["acoustic"],
            ["visual"],
            ["lexical"],
            ["acoustic", "visual", "lexical"],
        ):
            extractors = build_extractors(modalities, MEDIA_EXTRACTORS)
            out = Path(tmp) / ("store-" + "-".join(modalities))
            summary = run_extraction(
                manifest,
                out,
                extractors,
                workers=args.workers,
                chunk_size=args.chunk_size,
                progress=False,
            )
            print(
                f"{'+'.join(modalities):<25} {summary.done} clips, {summary.failed} failed, "
                f"in {summary.seconds:.1f} s ({summary.done / summary.seconds:.1f} clips/s), "
                f"{summary.media_seconds:.0f} s of media: real-time factor "
                f"{summary.realtime_factor:.1f}"
            )
    print(f"workers: {args.workers}")
    print(f"realtime_factor: {summary.realtime_factor:.1f}")


if __name__ == "__main__":
    main()
