"""``emomatch serve``: load a bundle once per worker and run the service with uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from emomatch.errors import EmomatchError
from emomatch.serve.app import ServeSettings, create_app
from emomatch.serve.protocols import PredictorLike

log = logging.getLogger(__name__)


def load_predictors(
    bundle: str | Path, workers: int, device: str = "cpu", transcribe: bool | None = None
) -> list[PredictorLike]:
    """One predictor per worker, each with its own model and extractors (none is shared
    between threads, so none needs to be thread-safe)."""
    import emomatch

    if workers < 1:
        raise EmomatchError(f"--workers must be at least 1, got {workers}")
    # Loaded before torch is touched here: a bad bundle is refused without importing it.
    predictors = [
        emomatch.load(bundle, device=device, transcribe=transcribe) for _ in range(workers)
    ]
    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        # Workers run side by side: each gets its share of the cores instead of all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    return list(predictors)


def connection_limit(settings: ServeSettings) -> int:
    """Open connections uvicorn accepts at once (more get 503): enough for every admitted
    job's request plus as many again still uploading or reading the page, so that the memory
    held by uploads in flight (each spooled to disk past 1 MB) stays bounded."""
    return 2 * (settings.queue + 1) + 32


def run_server(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    settings: ServeSettings | None = None,
    device: str = "cpu",
    transcribe: bool | None = None,
) -> None:
    """Serve ``bundle`` until interrupted; a bundle that does not load fails here, before the
    port is opened."""
    import uvicorn

    settings = settings or ServeSettings()
    predictors = load_predictors(bundle, workers, device, transcribe)
    app = create_app(predictors, settings)
    log.info(
        "serving %s: %d worker(s), queue %d, page at http://%s:%d/",
        bundle,
        workers,
        settings.queue,
        host,
        port,
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        limit_concurrency=connection_limit(settings) + workers,
    )
    uvicorn.Server(config).run()
