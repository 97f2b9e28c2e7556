"""Extraction throughput against the number of worker processes and Ray actors.

    .venv/bin/python bench/scaling.py [--clips-per-class 8] [--unlabeled 32] [--workers 1,2,4]
                                      [--ray 2]

Generates the raw-media demo corpus once (not timed), then runs the whole A+V+L extraction
(``run_extraction`` with the demo's extractor options, model loading included) into a fresh store
for each worker count with the local engine, and with ``--ray N`` once more on a local Ray
cluster of N actors. Prints clips/s and the real-time factor per setting, then
``extraction_speedup: <x>`` (the largest worker count's clips/s over one worker's). The
training-step sweeps (batch size, sequence length, unlabelled batch) are
``bench/train_step.py --sweep``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from emomatch.demo import MEDIA_EXTRACTORS
from emomatch.extract.run import build_extractors, run_extraction
from emomatch.synthetic.media import write_media_corpus

MODALITIES = ["acoustic", "visual", "lexical"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-class", type=int, default=8)
    parser.add_argument("--unlabeled", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--ray", type=int, default=0, help="also N Ray actors (0: not run)")
    parser.add_argument("--chunk-size", type=int, default=8)
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = write_media_corpus(
            Path(tmp) / "media", per_class_labeled=args.clips_per_class, unlabeled=args.unlabeled
        )
        print(f"generated the clips in {time.perf_counter() - t0:.1f} s (not timed below)")
        runs = [("local", w) for w in counts] + ([("ray", args.ray)] if args.ray else [])
        for engine, workers in runs:
            extractors = build_extractors(MODALITIES, MEDIA_EXTRACTORS)
            summary = run_extraction(
                manifest,
                Path(tmp) / f"store-{engine}-{workers}",
                extractors,
                workers=workers,
                chunk_size=args.chunk_size,
                engine=engine,
                progress=False,
            )
            rate = summary.done / summary.seconds
            rates[f"{engine}-{workers}"] = rate
            print(
                f"A+V+L, {engine} engine, {workers} worker(s): {summary.done} clips in "
                f"{summary.seconds:.1f} s, {rate:.1f} clips/s, real-time factor "
                f"{summary.realtime_factor:.1f}"
            )
    first, last = rates[f"local-{counts[0]}"], rates[f"local-{counts[-1]}"]
    print(f"extraction_speedup: {last / first:.2f}")


if __name__ == "__main__":
    main()
