"""The ``emomatch`` command with two small test extractors registered, for fault tests that must
run the real command in a process of its own (to kill it, or to race two of them).

Run as ``python -c "import tests.support.store_faults_driver as d; d.main()" extract ...`` from the
repository root: the extractor classes then live in an importable module, so the spawned
extraction workers can unpickle them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from emomatch.extract import Result, Utterance
from emomatch.extract.base import EXTRACTORS
from tests.support.extract_fakes import HashedWords, WavStats


class SlowWavStats(WavStats):
    """WavStats that takes ``delay`` seconds per item, so that a run lasts long enough to be
    killed or raced at many different moments; same features (and spec) as WavStats."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = float(delay)

    def extract(self, items: Sequence[Utterance]) -> list[Result]:
        time.sleep(self.delay * len(items))
        return super().extract(items)


def register() -> None:
    for name, cls in (("slow-wavstats", SlowWavStats), ("hashed-words", HashedWords)):
        if name not in EXTRACTORS:
            EXTRACTORS.register(name)(cls)


def main() -> None:
    register()
    from emomatch.cli import main as cli_main

    cli_main()


def extract_args(manifest: Path, out: Path, delay: float = 0.02, workers: int = 2) -> list[str]:
    """The arguments of an `emomatch extract` with the slow test extractors."""
    return [
        "extract",
        str(manifest),
        "--out",
        str(out),
        "--modalities",
        "acoustic,lexical",
        "--extractor",
        "acoustic=slow-wavstats",
        "--extractor",
        "lexical=hashed-words",
        "--option",
        f"acoustic.delay={delay}",
        "--workers",
        str(workers),
        "--chunk-size",
        "2",
        "--no-progress",
    ]
